package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/natsaga/natsaga/internal/discovery"
	"github.com/natsaga/natsaga/messages"
)

// serve adds the coordinator's request API as the NATS micro service
// [messages.CoordinatorService] in state "active", one endpoint per request
// on its existing subject, so that "nats micro ls", "info" and "stats" show
// it. A standby announces itself with no endpoint (state "standby").
//
// The endpoints have no queue group: one coordinator is active, and a
// request goes to every coordinator that serves. A coordinator stopped
// while active (SIGSTOP, a paused machine) keeps its subscriptions until
// the server finds it dead, minutes later; in a queue group it would take
// its share of the requests, unanswered, from the one that took over.
// Woken, it answers none of them: its round's commit finds the lease gone
// ([lease.check]), and its term ends. Each
// endpoint hands its message to the request's handler, with ctx, the
// term's: its end cuts short the work the handlers started. The handlers
// answer through respond. The caller stops the service.
func (c *Coordinator) serve(ctx context.Context) (*discovery.Service, error) {
	svc, err := c.service("active")
	if err != nil {
		return nil, err
	}
	endpoints := []struct {
		name, subject string
		handle        func(context.Context, *nats.Msg)
	}{
		{"start", messages.StartSubjects, c.onStart},
		{"starts", messages.StartBatchSubject, c.onStarts},
		{"tick", messages.TickSubject, c.onTick},
		{"status", messages.StatusSubject, c.onStatus},
		{"summary", messages.SummarySubject, c.onSummary},
		{"list", messages.ListSubject, c.onList},
		{"retry", messages.RetrySubject, c.onRetry},
		{"abort", messages.AbortSubject, c.onAbort},
		{"register", messages.RegisterSubject, c.onRegister},
	}
	for _, e := range endpoints {
		if err := svc.AddEndpoint(e.name, e.subject, false, func(m *nats.Msg) {
			// A request whose answer could not be sent is not applied
			// either: one whose reply subject is natsaga's own, and so any
			// message a JetStream consumer delivers (its reply is
			// $JS.ACK.…): a user allowed a consumer on any stream may have
			// it deliver what the stream holds to this subject.
			if err := messages.CheckReply(m.Reply); err != nil {
				c.warns.Warn("request refused, not applied", "subject", messages.Clip(m.Subject), "err", err)
				return
			}
			e.handle(ctx, m)
		}); err != nil {
			_ = svc.Stop()
			return nil, err
		}
	}
	return svc, nil
}

// ownMetadata are the keys of the micro service's metadata the
// coordinator sets itself.
var ownMetadata = []string{"definitions", "state", "copy", "pid"}

// service adds an instance of [messages.CoordinatorService] with no
// endpoint, its state ("standby" or "active"), the number of saga types,
// its copy and its process id in the metadata, with [Options.Metadata].
// No discovery request whose reply subject is natsaga's own is answered
// (see package discovery).
func (c *Coordinator) service(state string) (*discovery.Service, error) {
	md := maps.Clone(c.opts.Metadata)
	if md == nil {
		md = make(map[string]string, len(ownMetadata))
	}
	md["definitions"], md["state"], md["copy"] = fmt.Sprint(len(c.opts.Definitions)), state, c.copy
	md["pid"] = strconv.Itoa(os.Getpid())
	return discovery.Add(c.nc, discovery.Config{
		Name:        messages.CoordinatorService,
		Version:     messages.ServiceVersion,
		Description: "natsaga saga coordinator: starts and drives sagas over JetStream",
		Metadata:    md,
		Warn:        c.warns.Warn,
	})
}

// respond answers m with v, if m asked for an answer. An answer carrying
// an error also carries it in NATS micro's error headers: the message,
// clipped to 1,024 bytes, in Nats-Service-Error, the code (400, 404, 409
// or 500) in Nats-Service-Error-Code. An answer that would not fit the
// server's payload limit, headers included, is replaced by a too_large
// error.
func (c *Coordinator) respond(m *nats.Msg, v any) {
	if m.Reply == "" {
		return
	}
	if err := messages.CheckReply(m.Reply); err != nil {
		c.warns.Warn("answer not sent", "subject", messages.Clip(m.Subject), "err", err)
		return
	}
	out, err := answer(m.Reply, v)
	switch {
	case err != nil:
		// Every request is answered: one whose answer does not encode
		// (nothing natsaga stores should make one) gets an error.
		c.log.Error("answer does not encode; answering an error", "subject", messages.Clip(m.Subject), "err", err)
		out, err = answer(m.Reply, errorAnswer{messages.Version, wireError(fmt.Errorf("the answer could not be encoded: %w", err))})
	case int64(msgSize(out)) > c.nc.MaxPayload():
		err = fmt.Errorf("answer of %d bytes, limit %d: %w", msgSize(out), c.nc.MaxPayload(), errTooLargeToAnswer)
		c.log.Warn("answer too large; answering an error", "subject", messages.Clip(m.Subject), "err", err)
		out, err = answer(m.Reply, errorAnswer{messages.Version, wireError(err)})
	}
	if err == nil {
		err = c.nc.PublishMsg(out)
	}
	if err != nil {
		c.log.Warn("response not sent", "subject", messages.Clip(m.Subject), "err", err)
	}
}

// answer returns v encoded as a message to reply, with micro's error
// headers when v carries an error.
func answer(reply string, v any) (*nats.Msg, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := &nats.Msg{Subject: reply, Data: data}
	if we := responseError(v); we != nil {
		out.Header = nats.Header{}
		out.Header.Set(micro.ErrorHeader, messages.ClipReason(we.Message))
		out.Header.Set(micro.ErrorCodeHeader, messages.StatusCode(we.Code))
	}
	return out, nil
}

// msgSize is what m counts against the server's payload limit: its data
// and its headers as NATS encodes them.
func msgSize(m *nats.Msg) int {
	n := len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(": \r\n") + len(v)
			}
		}
	}
	return n
}

// errTooLargeToAnswer is the error of an answer that would not fit the
// server's payload limit.
var errTooLargeToAnswer = errors.New("answer too large for the server's payload limit")

// errorAnswer is the answer sent instead of one that would not fit, or
// not encode.
type errorAnswer struct {
	V     int                 `json:"v"`
	Error *messages.WireError `json:"error"`
}

// responseError returns the error an answer carries, nil when none.
func responseError(v any) *messages.WireError {
	switch r := v.(type) {
	case errorAnswer:
		return r.Error
	case messages.StartResponse:
		return r.Error
	case messages.StartBatchResponse:
		return r.Error
	case messages.TickAck:
		return r.Error
	case messages.StatusResponse:
		return r.Error
	case messages.ListResponse:
		return r.Error
	case messages.RetryResponse:
		return r.Error
	case messages.AbortResponse:
		return r.Error
	case messages.RegisterResponse:
		return r.Error
	}
	return nil
}
