package warnings

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Each kind is said at once, then at most once an interval, and the one
// said after says how many were not.
func TestOnceAnIntervalEachKind(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	l := newAt(&out, &now)

	for i := range 500 {
		l.Warn("bad tick", "n", i)
	}
	l.Warn("bad start request", "n", 0)
	now = now.Add(59 * time.Second)
	l.Warn("bad tick", "n", 500)
	now = now.Add(time.Second)
	l.Warn("bad tick", "n", 501)
	l.Warn("bad tick", "n", 502)
	now = now.Add(time.Minute)
	l.Warn("bad tick", "n", 503)

	require.Equal(t, []string{
		"level=WARN msg=\"bad tick\" n=0",
		"level=WARN msg=\"bad start request\" n=0",
		"level=WARN msg=\"bad tick\" n=501 not_said_before=500",
		"level=WARN msg=\"bad tick\" n=503 not_said_before=1",
	}, strings.Split(strings.TrimSpace(out.String()), "\n"))
}

// Log says a message at its level, its kind apart from its text: the NATS
// errors of two subscriptions are two kinds of one message.
func TestLogByKind(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	l := newAt(&out, &now)
	said := 0
	for range 100 {
		if l.Log(slog.LevelError, "natsaga.tick", "NATS error", "subject", "natsaga.tick") {
			said++
		}
		if l.Log(slog.LevelError, "natsaga.status", "NATS error", "subject", "natsaga.status") {
			said++
		}
	}
	require.Equal(t, 2, said, "Log reports what it said")
	now = now.Add(time.Minute)
	require.True(t, l.Log(slog.LevelError, "natsaga.tick", "NATS error", "subject", "natsaga.tick"))

	require.Equal(t, []string{
		`level=ERROR msg="NATS error" subject=natsaga.tick`,
		`level=ERROR msg="NATS error" subject=natsaga.status`,
		`level=ERROR msg="NATS error" subject=natsaga.tick not_said_before=99`,
	}, strings.Split(strings.TrimSpace(out.String()), "\n"))
}

// newAt returns a Limiter of one minute that logs text without times to
// out, its clock at *now.
func newAt(out *bytes.Buffer, now *time.Time) *Limiter {
	l := New(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})), time.Minute)
	l.now = func() time.Time { return *now }
	return l
}
