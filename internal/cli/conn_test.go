package cli_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
)

// pki is a CA and the server and client certificates it signed, as PEM
// files in a directory.
type pki struct{ ca, serverCert, serverKey, clientCert, clientKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	keyFile := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "natsaga test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		return der, k
	}
	sDER, sKey := leaf(2, "natsaga test server", x509.ExtKeyUsageServerAuth)
	cDER, cKey := leaf(3, "natsaga test client", x509.ExtKeyUsageClientAuth)
	return pki{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", sDER), serverKey: keyFile("server-key.pem", sKey),
		clientCert: write("client.pem", "CERTIFICATE", cDER), clientKey: keyFile("client-key.pem", cKey),
	}
}

func startServer(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, true
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

// connect parses args (and env) as a program does and connects.
func connect(t *testing.T, env map[string]string, args ...string) error {
	t.Helper()
	var c cli.Conn
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Register(fs, func(k string) string { return env[k] })
	require.NoError(t, fs.Parse(append(args, "-connect-wait", "0s")))
	nc, err := c.Connect(context.Background(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer nc.Close()
	// A round trip through the server.
	sub, err := nc.SubscribeSync("ping")
	require.NoError(t, err)
	require.NoError(t, nc.Publish("ping", []byte("x")))
	_, err = sub.NextMsg(5 * time.Second)
	return err
}

// TestMutualTLSAndNkey connects to a server that requires TLS with a
// verified client certificate and an nkey user, with the flags and with
// the environment, and is refused without each part.
func TestMutualTLSAndNkey(t *testing.T) {
	p := newPKI(t)
	tlsCfg, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.ca, Verify: true})
	require.NoError(t, err)
	user, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, err := user.PublicKey()
	require.NoError(t, err)
	seed, err := user.Seed()
	require.NoError(t, err)
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	require.NoError(t, os.WriteFile(seedFile, seed, 0o600))
	other, err := nkeys.CreateUser()
	require.NoError(t, err)
	otherSeed, err := other.Seed()
	require.NoError(t, err)
	otherFile := filepath.Join(t.TempDir(), "other.nk")
	require.NoError(t, os.WriteFile(otherFile, otherSeed, 0o600))

	url := startServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tlsCfg, TLSTimeout: 2,
		Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	all := []string{"-nats", url, "-nkey", seedFile, "-tls-ca", p.ca, "-tls-cert", p.clientCert, "-tls-key", p.clientKey}
	require.NoError(t, connect(t, nil, all...))
	require.NoError(t, connect(t, map[string]string{"NATS_URL": url, "NATS_NKEY": seedFile, "NATS_TLS_CA": p.ca,
		"NATS_TLS_CERT": p.clientCert, "NATS_TLS_KEY": p.clientKey}))

	require.Error(t, connect(t, nil, "-nats", url, "-tls-ca", p.ca, "-tls-cert", p.clientCert, "-tls-key", p.clientKey), "no nkey")
	require.Error(t, connect(t, nil, "-nats", url, "-nkey", otherFile, "-tls-ca", p.ca, "-tls-cert", p.clientCert, "-tls-key", p.clientKey), "an unknown nkey")
	require.Error(t, connect(t, nil, "-nats", url, "-nkey", seedFile, "-tls-ca", p.ca), "no client certificate")
	require.Error(t, connect(t, nil, "-nats", url, "-nkey", seedFile, "-tls-cert", p.clientCert, "-tls-key", p.clientKey), "the server's CA not trusted")

	err = connect(t, nil, "-nats", url, "-nkey", seedFile, "-tls-cert", p.clientCert)
	require.ErrorIs(t, err, cli.ErrSecurity, "a certificate without its key")
	err = connect(t, nil, "-nats", url, "-nkey", seedFile, "-creds", seedFile)
	require.ErrorIs(t, err, cli.ErrSecurity, "two identities")
	err = connect(t, nil, "-nats", url, "-nkey", filepath.Join(t.TempDir(), "missing.nk"))
	require.ErrorIs(t, err, cli.ErrSecurity, "a missing file")
}

// TestCreds connects with a credentials file to a server in operator mode,
// as NGS-style deployments run.
func TestCreds(t *testing.T) {
	op, err := nkeys.CreateOperator()
	require.NoError(t, err)
	opPub, err := op.PublicKey()
	require.NoError(t, err)
	opClaims := jwt.NewOperatorClaims(opPub)
	opJWT, err := opClaims.Encode(op)
	require.NoError(t, err)
	opDecoded, err := jwt.DecodeOperatorClaims(opJWT)
	require.NoError(t, err)

	acc, err := nkeys.CreateAccount()
	require.NoError(t, err)
	accPub, err := acc.PublicKey()
	require.NoError(t, err)
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(op)
	require.NoError(t, err)

	usr, err := nkeys.CreateUser()
	require.NoError(t, err)
	usrPub, err := usr.PublicKey()
	require.NoError(t, err)
	uc := jwt.NewUserClaims(usrPub)
	uc.IssuerAccount = accPub
	usrJWT, err := uc.Encode(acc)
	require.NoError(t, err)
	usrSeed, err := usr.Seed()
	require.NoError(t, err)
	creds, err := jwt.FormatUserConfig(usrJWT, usrSeed)
	require.NoError(t, err)
	credsFile := filepath.Join(t.TempDir(), "user.creds")
	require.NoError(t, os.WriteFile(credsFile, creds, 0o600))

	resolver := &server.MemAccResolver{}
	require.NoError(t, resolver.Store(accPub, accJWT))
	url := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{opDecoded}, AccountResolver: resolver})

	require.NoError(t, connect(t, nil, "-nats", url, "-creds", credsFile))
	require.NoError(t, connect(t, map[string]string{"NATS_URL": url, "NATS_CREDS": credsFile}))
	require.Error(t, connect(t, nil, "-nats", url), "no credentials")
}

// TestConnectRefusesNegativeWaits: a negative -reconnect-wait or
// -connect-wait is refused, not read as the default.
func TestConnectRefusesNegativeWaits(t *testing.T) {
	for _, tc := range []struct {
		c    cli.Conn
		want string
	}{
		{cli.Conn{URL: "nats://127.0.0.1:1", ReconnectWait: -time.Second}, "-reconnect-wait -1s: must not be negative"},
		{cli.Conn{URL: "nats://127.0.0.1:1", Wait: -time.Second}, "-connect-wait -1s: must not be negative"},
	} {
		_, err := tc.c.Connect(context.Background(), "test", slog.New(slog.DiscardHandler))
		require.EqualError(t, err, tc.want)
		require.ErrorIs(t, err, cli.ErrBadFlag)
	}
}

// TestConnectRefusesAURLThatDoesNotParse: a URL that does not parse is
// said at once, not tried again until the wait runs out.
func TestConnectRefusesAURLThatDoesNotParse(t *testing.T) {
	for _, u := range []string{"htp://bad url", "://x", "nats://a b:4222"} {
		c := cli.Conn{URL: u, Wait: time.Minute}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx, "test", slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, "the URL does not parse", u)
		require.ErrorIs(t, err, cli.ErrBadFlag, u)
		require.NoError(t, ctx.Err(), "%s: said at once", u)
		cancel()
	}
}

// TestConnectRefusesAnAddressNoDialCanUse: a port out of range is said at
// once too; no server will ever answer there.
func TestConnectRefusesAnAddressNoDialCanUse(t *testing.T) {
	for _, u := range []string{"nats://127.0.0.1:99999", "nats://user:secret@127.0.0.1:70000"} {
		c := cli.Conn{URL: u, Wait: time.Minute}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx, "test", slog.New(slog.DiscardHandler))
		require.ErrorContains(t, err, "invalid port", u)
		require.ErrorIs(t, err, cli.ErrBadFlag, u)
		require.NotContains(t, err.Error(), "secret")
		require.NoError(t, ctx.Err(), "%s: said at once", u)
		cancel()
	}
}

// TestConnectSaysItWaits connects to an address where no server answers
// yet: once it has waited a second, the log says what it waits for, not
// only when the wait runs out.
func TestConnectSaysItWaits(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	c := cli.Conn{URL: "nats://127.0.0.1:1", Wait: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Connect(ctx, "test", log)
		done <- err
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), `msg="waiting for the NATS server" url=nats://127.0.0.1:1 for=1m0s`)
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestRedacted hides the password of each URL that has one, and only
// that.
func TestRedacted(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	c := cli.Conn{URL: "nats://user:s3cret@127.0.0.1:1", Wait: time.Millisecond}
	_, err := c.Connect(context.Background(), "test", slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
	require.Error(t, err)
	require.NotContains(t, err.Error()+logs.String(), "s3cret")
	// Whatever the wait: with none left after the first attempt, its
	// error (which names the URL as given) was returned as it was.
	for _, wait := range []time.Duration{time.Minute, time.Nanosecond} {
		c := cli.Conn{URL: "nats://alice:s3cret@a b:4222", Wait: wait}
		_, err = c.Connect(context.Background(), "test", slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)))
		require.ErrorContains(t, err, "the URL does not parse")
		require.NotContains(t, err.Error()+logs.String(), "s3cret")
	}
}

// TestConnectRefusesABadInboxPrefix: an inbox prefix nats.go refuses, or
// inside natsaga's own subjects (whose inboxes no program answers), is a
// bad flag, said at once.
func TestConnectRefusesABadInboxPrefix(t *testing.T) {
	for _, p := range []string{"foo.>", "a b", "natsaga", "$JS.API", "x..y"} {
		c := cli.Conn{URL: "nats://127.0.0.1:1", Wait: time.Minute, InboxPrefix: p}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx, "test", slog.New(slog.DiscardHandler))
		require.ErrorIs(t, err, cli.ErrBadFlag, p)
		require.ErrorContains(t, err, "-inbox-prefix", p)
		require.NoError(t, ctx.Err(), "%s: said at once", p)
		cancel()
	}
	c := cli.Conn{URL: "nats://127.0.0.1:1", InboxPrefix: "_INBOX_driver"}
	_, err := c.Connect(context.Background(), "test", slog.New(slog.DiscardHandler))
	require.NotErrorIs(t, err, cli.ErrBadFlag, "a good prefix")
}

// TestConnectRefusesFilesThatDoNotLoad: a TLS or credentials file that is
// there but holds no certificate, key or seed is said at once, as a
// security option, not tried again until -connect-wait runs out.
func TestConnectRefusesFilesThatDoNotLoad(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate\n"), 0o600))
	huge := filepath.Join(t.TempDir(), "huge.nk")
	require.NoError(t, os.WriteFile(huge, make([]byte, cli.MaxSecurityFile+1), 0o600))
	for _, tc := range []struct {
		name string
		c    cli.Conn
		want string
	}{
		{"CA", cli.Conn{TLSCA: garbage}, "root certificate"},
		{"client certificate", cli.Conn{TLSCert: garbage, TLSKey: p.clientKey}, "client certificate"},
		{"client key", cli.Conn{TLSCert: p.clientCert, TLSKey: garbage}, "client certificate"},
		{"key of another certificate", cli.Conn{TLSCert: p.clientCert, TLSKey: p.serverKey}, "client certificate"},
		{"credentials", cli.Conn{Creds: garbage}, "credentials file " + garbage},
		// Read whole, a device or a huge file would hold the program.
		{"credentials that are a device", cli.Conn{Creds: os.DevNull}, os.DevNull + " is not a regular file"},
		{"a CA that is a directory", cli.Conn{TLSCA: t.TempDir()}, "is not a regular file"},
		{"a seed over the limit", cli.Conn{NkeySeed: huge}, "more than 1048576"},
	} {
		c := tc.c
		c.URL, c.Wait = "nats://127.0.0.1:1", time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Connect(ctx, "test", slog.New(slog.DiscardHandler))
		require.ErrorIs(t, err, cli.ErrSecurity, tc.name)
		require.ErrorIs(t, err, cli.ErrBadFlag, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.NoError(t, ctx.Err(), "%s: said at once", tc.name)
		cancel()
	}
	// The good files still load.
	c := cli.Conn{URL: "nats://127.0.0.1:1", TLSCA: p.ca, TLSCert: p.clientCert, TLSKey: p.clientKey}
	_, err := c.Connect(context.Background(), "test", slog.New(slog.DiscardHandler))
	require.NotErrorIs(t, err, cli.ErrSecurity)
	require.NotErrorIs(t, err, cli.ErrBadFlag, "no server there is not a bad flag")
}

// TestEmbedded keeps of a connection, for a server the process started,
// its waits and inbox prefix, and none of its credentials or TLS files.
func TestEmbedded(t *testing.T) {
	c := cli.Conn{URL: "tls://far:4222", User: "u", Password: "p", Creds: "c", NkeySeed: "n", TLSCA: "ca", TLSCert: "cert", TLSKey: "key",
		InboxPrefix: "_INBOX_me", Wait: time.Second, MaxReconnects: 3, ReconnectWait: 2 * time.Second}
	require.Equal(t, cli.Conn{URL: "nats://127.0.0.1:1", InboxPrefix: "_INBOX_me", Wait: time.Second, MaxReconnects: 3, ReconnectWait: 2 * time.Second},
		c.Embedded("nats://127.0.0.1:1"))
}
