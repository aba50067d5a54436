// Package cli holds what natsaga's commands share: NATS connection flags
// (also read from NATS_URL, NATS_USER, NATS_PASSWORD and NATS_INBOX_PREFIX),
// logging, and a context cancelled by SIGINT or SIGTERM. Only the programs
// use it: the cmd/ packages and internal/agentcmd, which they run.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is the NATS URL used when neither the flag nor NATS_URL is set.
const DefaultURL = "nats://127.0.0.1:4222"

// Conn holds the connection flags of a command.
type Conn struct {
	URL      string
	User     string
	Password string
	// InboxPrefix, when set, replaces "_INBOX" as the prefix of the
	// connection's reply subjects, so that a server's permissions can give
	// each user inboxes no other user may subscribe to (docs/deploy.md).
	InboxPrefix string
	// Wait is how long Connect keeps trying while the server is not up.
	Wait time.Duration
}

// Register adds -nats, -user, -password, -inbox-prefix and -connect-wait to
// fs, with defaults from getenv (NATS_URL, NATS_USER, NATS_PASSWORD,
// NATS_INBOX_PREFIX).
func (c *Conn) Register(fs *flag.FlagSet, getenv func(string) string) {
	url := getenv("NATS_URL")
	if url == "" {
		url = DefaultURL
	}
	fs.StringVar(&c.URL, "nats", url, "NATS server URL (env NATS_URL)")
	fs.StringVar(&c.User, "user", getenv("NATS_USER"), "NATS user (env NATS_USER)")
	fs.StringVar(&c.Password, "password", getenv("NATS_PASSWORD"), "NATS password (env NATS_PASSWORD)")
	fs.StringVar(&c.InboxPrefix, "inbox-prefix", getenv("NATS_INBOX_PREFIX"), "prefix of reply subjects instead of _INBOX (env NATS_INBOX_PREFIX)")
	fs.DurationVar(&c.Wait, "connect-wait", 30*time.Second, "how long to keep trying to reach the NATS server at start")
}

// Connect connects as name, retrying until the server answers or Wait has
// passed, and reconnecting for ever after that. It returns the last error
// when the server never answered.
func (c *Conn) Connect(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "url", nc.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Error("NATS error", "subject", subj, "err", err)
		}),
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	deadline := time.Now().Add(c.Wait)
	for {
		nc, err := nats.Connect(c.URL, opts...)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) || errors.Is(err, nats.ErrAuthorization) {
			return nil, fmt.Errorf("connect to %s: %w", c.URL, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: %w", c.URL, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Logger returns a text logger on w at level ("debug", "info", "warn" or
// "error"). It returns an error for another level.
func Logger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// SignalContext returns a context cancelled by SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Drain drains nc, waiting at most timeout, so that in-flight publishes and
// acknowledgements reach the server before the process exits.
func Drain(nc *nats.Conn, timeout time.Duration) {
	done := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
		nc.Close()
	}
}
