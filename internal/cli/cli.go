// Package cli holds what natsaga's commands share: NATS connection flags
// (also read from NATS_URL, NATS_USER, NATS_PASSWORD, NATS_CREDS,
// NATS_NKEY, NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY and
// NATS_INBOX_PREFIX), logging, and a context cancelled by SIGINT or
// SIGTERM. Only the programs use it: the cmd/ packages, and agentmain,
// the main of any model's agent program.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/natsaga/natsaga/internal/natsurl"
	"github.com/natsaga/natsaga/internal/warnings"
	"github.com/natsaga/natsaga/messages"
)

// DefaultURL is the NATS URL used when neither the flag nor NATS_URL is set.
const DefaultURL = "nats://127.0.0.1:4222"

// Conn holds the connection flags of a command.
type Conn struct {
	URL      string
	User     string
	Password string
	// Creds is a NATS credentials file (a user JWT and its nkey seed), for
	// a server in operator mode.
	Creds string
	// NkeySeed is a file holding an nkey seed ("SU..."), for a server whose
	// users are nkeys.
	NkeySeed string
	// TLSCA is a PEM file of the certificate authorities that sign the
	// server's certificate, in place of the system's.
	TLSCA string
	// TLSCert and TLSKey are a PEM client certificate and its key, for a
	// server that verifies its clients (mutual TLS).
	TLSCert, TLSKey string
	// InboxPrefix, when set, replaces "_INBOX" as the prefix of the
	// connection's reply subjects, so that a server's permissions can give
	// each user inboxes no other user may subscribe to (docs/deploy.md).
	InboxPrefix string
	// Wait is how long Connect keeps trying while the server is not up.
	Wait time.Duration
	// MaxReconnects is how many times in a row a lost connection is
	// tried again before the program gives up; negative means for ever.
	MaxReconnects int
	// ReconnectWait is the pause between two attempts to reconnect.
	ReconnectWait time.Duration
}

// Embedded returns c for a server this process started itself at url,
// which has no users and no TLS: the credentials and TLS files c was
// given, for another server, are dropped, as [ChildEnv] drops them for
// the children; the waits and the inbox prefix are kept.
func (c Conn) Embedded(url string) Conn {
	c.URL, c.User, c.Password, c.Creds, c.NkeySeed = url, "", "", "", ""
	c.TLSCA, c.TLSCert, c.TLSKey = "", "", ""
	return c
}

// ChildEnv clears, for a child process that reaches another server, every
// variable Register reads a credential from; and NATSAGA_METRICS_ADDR,
// one process's address, which every child would try to listen on.
var ChildEnv = []string{"NATS_USER=", "NATS_PASSWORD=", "NATS_CREDS=", "NATS_NKEY=",
	"NATS_TLS_CA=", "NATS_TLS_CERT=", "NATS_TLS_KEY=", "NATSAGA_METRICS_ADDR="}

// Register adds -nats, -user, -password, -creds, -nkey, -tls-ca,
// -tls-cert, -tls-key, -inbox-prefix, -connect-wait, -max-reconnects and
// -reconnect-wait to fs, with defaults from getenv (NATS_URL, NATS_USER,
// NATS_PASSWORD, NATS_CREDS, NATS_NKEY, NATS_TLS_CA, NATS_TLS_CERT,
// NATS_TLS_KEY, NATS_INBOX_PREFIX).
func (c *Conn) Register(fs *flag.FlagSet, getenv func(string) string) {
	url := getenv("NATS_URL")
	if url == "" {
		url = DefaultURL
	}
	fs.StringVar(&c.URL, "nats", url, "NATS server URL (env NATS_URL)")
	fs.StringVar(&c.User, "user", getenv("NATS_USER"), "NATS user (env NATS_USER)")
	fs.StringVar(&c.Password, "password", getenv("NATS_PASSWORD"), "NATS password (default: env NATS_PASSWORD, never printed)")
	// The default is the secret itself: -h must not print it.
	fs.Lookup("password").DefValue = ""
	fs.StringVar(&c.Creds, "creds", getenv("NATS_CREDS"), "NATS credentials file: user JWT and nkey seed (env NATS_CREDS)")
	fs.StringVar(&c.NkeySeed, "nkey", getenv("NATS_NKEY"), "file holding the NATS user's nkey seed (env NATS_NKEY)")
	fs.StringVar(&c.TLSCA, "tls-ca", getenv("NATS_TLS_CA"), "PEM file of the CAs that sign the server's certificate (env NATS_TLS_CA)")
	fs.StringVar(&c.TLSCert, "tls-cert", getenv("NATS_TLS_CERT"), "PEM client certificate, with -tls-key (env NATS_TLS_CERT)")
	fs.StringVar(&c.TLSKey, "tls-key", getenv("NATS_TLS_KEY"), "PEM key of -tls-cert (env NATS_TLS_KEY)")
	fs.StringVar(&c.InboxPrefix, "inbox-prefix", getenv("NATS_INBOX_PREFIX"), "prefix of reply subjects instead of _INBOX (env NATS_INBOX_PREFIX)")
	fs.DurationVar(&c.Wait, "connect-wait", 30*time.Second, "how long to keep trying to reach the NATS server at start")
	fs.IntVar(&c.MaxReconnects, "max-reconnects", -1, "attempts in a row to reconnect a lost connection before giving up; negative: for ever")
	fs.DurationVar(&c.ReconnectWait, "reconnect-wait", 250*time.Millisecond, "pause between two attempts to reconnect")
}

// ErrSecurity is wrapped by the errors of Connect for security flags
// that do not go together or files that cannot be read or do not load.
var ErrSecurity = errors.New("NATS security options")

// ErrBadFlag is matched by the errors of Connect that no server caused
// and no attempt would mend: a negative wait, a URL that does not parse or
// an address no dial can use, and every [ErrSecurity]. The programs exit 2
// for them, as for any other bad flag; the error's text is unchanged.
var ErrBadFlag = errors.New("a connection flag no server can take")

// BadFlag marks err with ErrBadFlag: the programs exit 2 for it.
func BadFlag(err error) error { return markedError{err} }

// markedError is err, which errors.Is also finds to be ErrBadFlag.
type markedError struct{ err error }

func (e markedError) Error() string   { return e.err.Error() }
func (e markedError) Unwrap() []error { return []error{e.err, ErrBadFlag} }

// MaxSecurityFile bounds a credentials, nkey seed or TLS file: a
// certificate chain is a few KiB.
const MaxSecurityFile = 1 << 20

// securityOptions returns the nats.go options of c's credentials and TLS
// files. It returns an error wrapping ErrSecurity when they do not go
// together or a file cannot be read or does not load.
func (c *Conn) securityOptions() ([]nats.Option, error) {
	var opts []nats.Option
	n := 0
	for _, set := range []bool{c.User != "", c.Creds != "", c.NkeySeed != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, fmt.Errorf("%w: -user, -creds and -nkey exclude each other", ErrSecurity)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, fmt.Errorf("%w: -tls-cert and -tls-key go together", ErrSecurity)
	}
	for _, f := range []string{c.Creds, c.NkeySeed, c.TLSCA, c.TLSCert, c.TLSKey} {
		if f == "" {
			continue
		}
		// Read whole by nats.go: a device, a pipe or a huge file would
		// hold the program (deaf to signals) before it ever connects.
		fi, err := os.Stat(f)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %w", ErrSecurity, err)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%w: %s is not a regular file", ErrSecurity, f)
		case fi.Size() > MaxSecurityFile:
			return nil, fmt.Errorf("%w: %s: %d bytes, more than %d", ErrSecurity, f, fi.Size(), MaxSecurityFile)
		}
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	case c.NkeySeed != "":
		o, err := nats.NkeyOptionFromSeed(c.NkeySeed)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey seed %s: %w", ErrSecurity, c.NkeySeed, err)
		}
		opts = append(opts, o)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	// A file that is there but does not hold what its flag needs (a CA
	// that is not PEM, a certificate without its key, a credentials file
	// without a JWT or a seed) never will: said now, not tried again
	// with every connect attempt until -connect-wait runs out.
	if err := checkFiles(c, opts); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSecurity, err)
	}
	return opts, nil
}

// checkFiles loads the TLS files of opts as nats.go will, into options
// of its own, and reads c's credentials file's JWT and seed.
func checkFiles(c *Conn, opts []nats.Option) error {
	var scratch nats.Options
	for _, o := range opts {
		if err := o(&scratch); err != nil {
			return err
		}
	}
	if c.Creds == "" {
		return nil
	}
	data, err := os.ReadFile(c.Creds)
	if err != nil {
		return err
	}
	if _, err := nkeys.ParseDecoratedJWT(data); err != nil {
		return fmt.Errorf("credentials file %s: no user JWT: %w", c.Creds, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return fmt.Errorf("credentials file %s: no nkey seed: %w", c.Creds, err)
	}
	kp.Wipe()
	return nil
}

// checkInboxPrefix refuses an inbox prefix nats.go would refuse at every
// connect attempt, or whose inboxes the coordinator and the agents would
// not answer: it must be a state key's shape (1 to 8 identifiers joined by
// dots) and lie outside natsaga's own subjects.
func checkInboxPrefix(p string) error {
	if !messages.ValidKey(p) {
		return fmt.Errorf("-inbox-prefix %s: want %s", messages.Quote(p), messages.KeyRule)
	}
	if err := messages.CheckReply(p + ".x"); err != nil {
		return fmt.Errorf("-inbox-prefix %s: natsaga answers no inbox inside its own subjects", messages.Quote(p))
	}
	return nil
}

// Check returns the error, matching [ErrBadFlag], that [Connect] would
// return at once for c's flags, without connecting: a negative wait, a
// URL of a scheme NATS does not speak, security files that do not go
// together or do not load, a bad inbox prefix. A program checks its
// flags with it as it parses them, so that a health check's command line
// is judged as the program's own.
func (c *Conn) Check() error {
	_, err := c.check()
	return err
}

// check is [Conn.Check], returning the security options it loaded.
func (c *Conn) check() ([]nats.Option, error) {
	switch {
	case c.ReconnectWait < 0:
		return nil, BadFlag(fmt.Errorf("-reconnect-wait %s: must not be negative", c.ReconnectWait))
	case c.Wait < 0:
		return nil, BadFlag(fmt.Errorf("-connect-wait %s: must not be negative", c.Wait))
	}
	sec, err := c.securityOptions()
	if err != nil {
		return nil, BadFlag(err)
	}
	// A URL that does not parse never will, and a scheme NATS does not
	// speak would be dialled as if it were nats:// until the wait ran out.
	if err := natsurl.Check(c.URL); err != nil {
		return nil, BadFlag(err)
	}
	if c.InboxPrefix != "" {
		if err := checkInboxPrefix(c.InboxPrefix); err != nil {
			return nil, BadFlag(err)
		}
	}
	return sec, nil
}

// quietWait is how long Connect waits for a server before it logs that it
// waits.
const quietWait = time.Second

// Connect connects as name, retrying until the server answers or Wait has
// passed, and saying so in log once it has waited quietWait. A connection
// lost later is reconnected, MaxReconnects times in a row (negative: for
// ever; the zero Conn reconnects for ever too), the failed attempts logged
// at the first and then once every 10 s with their count; when the
// attempts run out the connection closes and the
// program's consumers and requests fail. It returns the last error
// when the server never answered, or an error matching ErrBadFlag.
func (c *Conn) Connect(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, error) {
	sec, err := c.check()
	if err != nil {
		return nil, err
	}
	shown := natsurl.Redacted(c.URL)
	maxReconnects := c.MaxReconnects
	if maxReconnects == 0 && c.ReconnectWait == 0 {
		maxReconnects = -1 // the zero Conn
	}
	wait := c.ReconnectWait
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	var reconnects reconnectLog
	asyncErrors := warnings.New(log, time.Minute)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(maxReconnects),
		nats.ReconnectWait(wait),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			if n, ok := reconnects.failed(time.Now()); ok {
				log.Warn("reconnect to NATS failed; trying again", "url", shown, "err", err, "attempts", n)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted(), "attempts", reconnects.reconnected())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Error("NATS connection closed", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			// Once a minute for each subscription: a flood on a subject
			// the program reads makes a slow-consumer error a message.
			asyncErrors.Log(slog.LevelError, subj, "NATS error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, natsurl.Pings()...)
	opts = append(opts, sec...)
	d := newDialer()
	opts = append(opts, nats.SetCustomDialer(d))
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	start := time.Now()
	deadline, said := start.Add(c.Wait), false
	for {
		nc, err := nats.Connect(c.URL, opts...)
		if err == nil {
			return nc, nil
		}
		if derr := d.lastError(); derr != nil && errors.Is(err, nats.ErrNoServers) {
			err = fmt.Errorf("%w: %w", err, derr)
		}
		// A URL that does not parse never will: said at once, without
		// the URL as given, which may hold a password (first: the wait
		// may be over by the first attempt's end, and the error of the
		// parse names the URL).
		if uerr := (*url.Error)(nil); errors.As(err, &uerr) {
			return nil, BadFlag(fmt.Errorf("connect to %s: the URL does not parse: %w", shown, uerr.Err))
		}
		// Nor does an address no dial can use, such as a port out of
		// range.
		if aerr := (*net.AddrError)(nil); errors.As(err, &aerr) {
			return nil, BadFlag(fmt.Errorf("connect to %s: %w", shown, aerr))
		}
		if time.Now().After(deadline) || errors.Is(err, nats.ErrAuthorization) {
			return nil, fmt.Errorf("connect to %s: %w", shown, err)
		}
		// A server started beside this program is often up within a
		// second: only a longer wait is worth a line.
		if !said && time.Since(start) >= quietWait {
			log.Info("waiting for the NATS server", "url", shown, "for", c.Wait, "err", err)
			said = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to %s: %w (last attempt: %w)", shown, ctx.Err(), err)
		case <-time.After(250 * time.Millisecond):
		}
	}
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

// reconnectLogEvery spaces the warnings of an outage's failed reconnect
// attempts, which come every -reconnect-wait (250ms by default).
const reconnectLogEvery = 10 * time.Second

// reconnectLog says which failed reconnect attempts of an outage are
// logged: the first, then one every reconnectLogEvery, each with the
// count of attempts so far. It is safe for concurrent use.
type reconnectLog struct {
	mu       sync.Mutex
	attempts int
	logged   time.Time
}

// failed counts an attempt that failed at now, and reports the count and
// whether to log it.
func (r *reconnectLog) failed(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if r.attempts > 1 && now.Sub(r.logged) < reconnectLogEvery {
		return r.attempts, false
	}
	r.logged = now
	return r.attempts, true
}

// reconnected ends the outage, and returns the attempts it took.
func (r *reconnectLog) reconnected() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.attempts + 1
	r.attempts = 0
	return n
}
