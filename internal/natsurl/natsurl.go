// Package natsurl checks NATS URLs and shows them safely: what the
// programs and the Go client print of a URL never holds its password. It
// also sets the pings with which their connections find a server frozen.
package natsurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/messages"
)

// A connection sends its server a ping every pingInterval, and takes the
// server for lost, and reconnects (to another node, in a cluster), once
// maxPingsOut pings in a row went unanswered: 15 to 20 s after the server
// froze (a paused container or VM, SIGSTOP), which closes no socket.
// With nats.go's defaults (2 minutes, 2) a program stayed 4 to 6 minutes
// on a frozen node of the compose demo's cluster while the others moved
// on, and a simulation's driver gave up waiting meanwhile.
const (
	pingInterval = 5 * time.Second
	maxPingsOut  = 3
)

// Pings returns the options that set a connection's pings as the
// programs and [client.Connect] have them.
func Pings() []nats.Option {
	return []nats.Option{nats.PingInterval(pingInterval), nats.MaxPingsOutstanding(maxPingsOut)}
}

// Check returns an error for urls, a NATS URL or a comma-separated list of
// them, when one does not parse or has a scheme NATS does not speak
// (ftp://, http://): either would be dialled as if it were nats:// until
// the caller's wait ran out. A URL without a scheme is host:port, as
// nats.go takes it. The error shows urls [Redacted].
func Check(urls string) error {
	shown := Redacted(urls)
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil {
			// Not the *url.Error itself: it names the URL.
			return fmt.Errorf("connect to %s: the URL does not parse: %w", shown, errors.Unwrap(err))
		}
		switch strings.ToLower(p.Scheme) {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("connect to %s: scheme %s: a NATS URL is nats://, tls://, ws:// or wss://",
				shown, messages.Quote(p.Scheme))
		}
	}
	return nil
}

// Redacted returns urls, a NATS URL or a comma-separated list of them, for
// a log or an error: the password of each URL that has one replaced by
// "xxxxx", and a user with no password, which may be a token, too; as
// -password is never printed either.
func Redacted(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		switch {
		case err != nil || (u.User == nil && strings.Contains(p, "@")):
			// Not a URL with a user, yet what comes before an @ may be a
			// password.
			if at := strings.LastIndex(p, "@"); at >= 0 {
				scheme, _, found := strings.Cut(p[:at], "://")
				if !found {
					scheme = ""
				} else {
					scheme += "://"
				}
				parts[i] = strings.TrimSpace(scheme) + "xxxxx" + p[at:]
			}
		case u.User != nil:
			if _, has := u.User.Password(); !has {
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
