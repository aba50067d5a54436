// Package embedded runs a nats-server with JetStream inside the process: the
// default for the flood simulation, the benchmarks and every test.
package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an embedded server. The zero value works: a random
// port on 127.0.0.1 and JetStream data in a temporary directory chosen by
// the server.
type Options struct {
	// Host and Port to listen on; Port -1 (or 0) picks a free port.
	Host string
	Port int
	// StoreDir keeps JetStream's data. A restart with the same directory
	// resumes where the server stopped.
	StoreDir string
	// NoJetStream starts a server without JetStream (to test refusals).
	NoJetStream bool
	// Config, when set, is a nats-server configuration file to load; the
	// fields above then override it.
	Config string
}

// Start starts a server and waits until it accepts connections. It returns
// an error when the server cannot be configured or does not become ready
// within 10 seconds. The caller calls Shutdown.
func Start(opts Options) (*server.Server, error) {
	so := &server.Options{}
	if opts.Config != "" {
		var err error
		if so, err = server.ProcessConfigFile(opts.Config); err != nil {
			return nil, fmt.Errorf("embedded nats-server config: %w", err)
		}
	}
	so.Host = cmpOr(opts.Host, so.Host, "127.0.0.1")
	so.Port = opts.Port
	if so.Port == 0 {
		so.Port = -1
	}
	so.NoSigs = true
	so.NoLog = true
	so.JetStream = !opts.NoJetStream
	if opts.StoreDir != "" {
		so.StoreDir = opts.StoreDir
	}
	ns, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("embedded nats-server: not ready after 10s")
	}
	return ns, nil
}

func cmpOr(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
