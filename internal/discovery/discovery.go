// Package discovery announces a natsaga program as an instance of a NATS
// micro service: it answers micro's PING, INFO and STATS requests on
// $SRV.<verb>, $SRV.<verb>.<name> and $SRV.<verb>.<name>.<id> with the
// answers of nats.go's micro package (its types, so "nats micro ls",
// "info" and "stats" read them), and serves the program's endpoints.
//
// It exists because of one thing micro does not do: check where an answer
// goes. nats.go's micro answers discovery requests to whatever reply
// subject they name, with the program's permissions, so one PING whose
// reply subject was an insurer's ledger subject was stored in the
// insurer's state stream in place of its fund. This package answers no
// request whose reply subject lies inside natsaga's own subjects
// ([messages.CheckReply]): it drops it, with a rate-limited warning.
package discovery

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/natsaga/natsaga/messages"
)

// Config describes a service instance.
type Config struct {
	Name, Version, Description string
	Metadata                   map[string]string
	// Stats, when set, gives each endpoint's data in the STATS answer.
	Stats func() any
	// Warn, when set, is told of every discovery request not answered:
	// its reply subject is natsaga's, or the answer could not be sent. It
	// should be rate-limited: anyone allowed to publish on $SRV may send
	// such requests.
	Warn func(msg string, args ...any)
}

// Service is one instance of a micro service. Its methods are safe for
// concurrent use.
type Service struct {
	nc      *nats.Conn
	cfg     Config
	id      string
	started time.Time

	mu        sync.Mutex
	endpoints []*micro.EndpointStats
	subs      []*nats.Subscription
}

// Add announces an instance of the service cfg describes on nc.
func Add(nc *nats.Conn, cfg Config) (*Service, error) {
	s := &Service{nc: nc, cfg: cfg, id: nuid.Next(), started: time.Now().UTC()}
	verbs := []struct {
		verb   micro.Verb
		answer func() any
	}{
		{micro.PingVerb, func() any { return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType} }},
		{micro.InfoVerb, func() any { return s.Info() }},
		{micro.StatsVerb, func() any { return s.Stats() }},
	}
	for _, v := range verbs {
		for _, at := range [][2]string{{"", ""}, {cfg.Name, ""}, {cfg.Name, s.id}} {
			subject, err := micro.ControlSubject(v.verb, at[0], at[1])
			if err == nil {
				err = s.subscribe(subject, "", func(m *nats.Msg) { s.answer(m, v.answer()) })
			}
			if err != nil {
				_ = s.Stop()
				return nil, fmt.Errorf("micro service %s: %w", cfg.Name, err)
			}
		}
	}
	return s, nil
}

// AddEndpoint serves subject with handle, in micro's default queue group
// unless queue is false (then every instance gets each request). The
// endpoint's STATS count its requests and the time handle took; handle
// answers the request itself, and should not answer a reply subject that
// [messages.CheckReply] refuses.
func (s *Service) AddEndpoint(name, subject string, queue bool, handle func(*nats.Msg)) error {
	group := ""
	if queue {
		group = micro.DefaultQueueGroup
	}
	e := &micro.EndpointStats{Name: name, Subject: subject, QueueGroup: group}
	s.mu.Lock()
	s.endpoints = append(s.endpoints, e)
	s.mu.Unlock()
	err := s.subscribe(subject, group, func(m *nats.Msg) {
		start := time.Now()
		handle(m)
		took := time.Since(start)
		s.mu.Lock()
		e.NumRequests++
		e.ProcessingTime += took
		e.AverageProcessingTime = e.ProcessingTime / time.Duration(e.NumRequests)
		s.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("micro endpoint %s: %w", name, err)
	}
	return nil
}

// Stop ends the instance: its subscriptions are removed.
func (s *Service) Stop() error {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	var first error
	for _, sub := range subs {
		if err := sub.Unsubscribe(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Info is the instance's INFO answer.
func (s *Service) Info() micro.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	endpoints := make([]micro.EndpointInfo, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		endpoints = append(endpoints, micro.EndpointInfo{Name: e.Name, Subject: e.Subject, QueueGroup: e.QueueGroup})
	}
	return micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType, Description: s.cfg.Description, Endpoints: endpoints}
}

// Stats is the instance's STATS answer.
func (s *Service) Stats() micro.Stats {
	var data json.RawMessage
	if s.cfg.Stats != nil {
		data, _ = json.Marshal(s.cfg.Stats()) // a Stats value that does not encode is left out
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	endpoints := make([]*micro.EndpointStats, 0, len(s.endpoints))
	for _, e := range s.endpoints {
		st := *e
		st.Data = data
		endpoints = append(endpoints, &st)
	}
	return micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started, Endpoints: endpoints}
}

func (s *Service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: s.cfg.Name, ID: s.id, Version: s.cfg.Version, Metadata: s.cfg.Metadata}
}

func (s *Service) subscribe(subject, group string, cb nats.MsgHandler) error {
	sub, err := s.nc.QueueSubscribe(subject, group, cb)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.mu.Unlock()
	return nil
}

// answer sends v to m's reply subject, as Respond does.
func (s *Service) answer(m *nats.Msg, v any) {
	if err := Respond(m, v); err != nil && s.cfg.Warn != nil {
		s.cfg.Warn("micro discovery not answered", "subject", messages.Clip(m.Subject), "err", err)
	}
}

// Respond sends v, in JSON, to m's reply subject, unless m asked for no
// answer; it returns an error, and sends nothing, for a reply subject
// inside natsaga's own subjects ([messages.CheckReply]), and an error when
// v does not encode or cannot be sent. An endpoint's handler answers so.
func Respond(m *nats.Msg, v any) error {
	if m.Reply == "" {
		return nil
	}
	if err := messages.CheckReply(m.Reply); err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return m.Respond(data)
}
