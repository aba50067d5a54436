package testenv

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// SyncBuffer is a bytes.Buffer that a process's output (or a logger) and
// the test may use at once. Its zero value is ready; it is safe for
// concurrent use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ServedAddr returns the address a program bound for its metrics and
// health, from its JSON log in logs, once it has logged it.
func ServedAddr(t testing.TB, logs *SyncBuffer) string {
	t.Helper()
	addrRe := regexp.MustCompile(`"msg":"serving metrics and health"[^\n]*?"addr":"([^"]+)"`)
	var addr string
	require.Eventually(t, func() bool {
		m := addrRe.FindStringSubmatch(logs.String())
		if m == nil {
			return false
		}
		addr = m[1]
		return true
	}, 10*time.Second, 10*time.Millisecond, "logs: %s", logs.String())
	return addr
}

// Get asks url with an HTTP GET and returns the status code and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// RequireConnecting requires that the program serving health on addr is
// live and not ready because it is connecting to NATS.
func RequireConnecting(t testing.TB, addr string) {
	t.Helper()
	code, _ := Get(t, "http://"+addr+"/livez")
	require.Equal(t, http.StatusOK, code)
	code, body := Get(t, "http://"+addr+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "connecting to NATS")
}
