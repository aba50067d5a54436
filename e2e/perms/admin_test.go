package perms_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestAdminAndSystemUsers checks the two users for people: admin lists
// natsaga's streams (as "nats stream ls" does), and system asks every
// server for its JetStream report (as "nats server report jetstream"
// does) in the system account, apart from natsaga's.
func TestAdminAndSystemUsers(t *testing.T) {
	url := startServer(t)
	admin := connect(t, url, adminUser)
	js, err := jetstream.New(admin.nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "ADMIN_SEES", Subjects: []string{"admin.sees"}})
	require.NoError(t, err)
	var names []string
	for n := range js.StreamNames(ctx).Name() {
		names = append(names, n)
	}
	require.Contains(t, names, "ADMIN_SEES")

	sys := connect(t, url, systemUser)
	m, err := sys.nc.Request("$SYS.REQ.SERVER.PING.JSZ", nil, 5*time.Second)
	require.NoError(t, err)
	var jsz struct {
		Data struct {
			Streams int `json:"streams"`
		} `json:"data"`
		Error any `json:"error"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &jsz), string(m.Data))
	require.Nil(t, jsz.Error)
	require.Equal(t, 1, jsz.Data.Streams, "the server's report counts natsaga's account's streams")

	// The system user works in another account: it sees none of natsaga's.
	sjs, err := jetstream.New(sys.nc)
	require.NoError(t, err)
	_, err = sjs.Stream(ctx, "ADMIN_SEES")
	require.Error(t, err)
	require.Empty(t, admin.errors())
}
