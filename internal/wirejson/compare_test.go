package wirejson_test

import (
	"encoding/json"
	"testing"
	"time"

	gojson "github.com/goccy/go-json"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// This file holds the measurement the package doc reports: the hot
// payloads encoded and decoded by this package and by general JSON
// libraries. Run it with
//
//	go test -run x -bench Compare ./internal/wirejson
//	GOEXPERIMENT=jsonv2 go test -run x -bench Compare ./internal/wirejson

// library is a general JSON library under comparison.
type library struct {
	name      string
	marshal   func(any) ([]byte, error)
	unmarshal func([]byte, any) error
}

func libraries() []library {
	return append([]library{
		{"encoding-json", json.Marshal, json.Unmarshal},
		{"goccy-go-json", gojson.Marshal, gojson.Unmarshal},
	}, jsonV2()...)
}

// rawCommand is a command with its context held as one raw JSON object,
// the cheapest shape a general library can be given.
type rawCommand struct {
	V       int             `json:"v"`
	SagaID  string          `json:"saga_id"`
	Saga    string          `json:"saga"`
	Step    string          `json:"step"`
	Action  string          `json:"action"`
	Attempt int             `json:"attempt"`
	Seq     int             `json:"seq"`
	Tick    int64           `json:"tick"`
	Context json.RawMessage `json:"context"`
}

// payloads are a command, its reply and its barrier record as a flood
// subsidy saga sends them, and the stored saga after its second step.
func payloads(b *testing.B) (messages.Command, messages.Reply, messages.Record, *saga.Execution) {
	ctx := messages.Context{}.MustSet("household_id", "h-000123").MustSet("subsidy_cost", 500000).
		MustSet("application_status", "pending").MustSet("approved", true)
	cmd := messages.Command{V: messages.Version, SagaID: "01JDZ0M4Y1V3K8Q2X7R9T5W6PZ", Saga: "subsidy",
		Step: "budget_deducted", Action: messages.Execute, Attempt: 1, Seq: 3, Tick: 42, Context: ctx}
	reply := messages.ReplyTo(&cmd, messages.OK, "")
	reply.Output = messages.Context{}.MustSet("subsidy_paid", 500000)
	reply.Agent, reply.Role = "government-1234-abcdef", "government"
	rec := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Output: reply.Output, Seq: 3,
		At: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}}
	e := saga.New(saga.Options{})
	if err := e.Register(subsidyDef()); err != nil {
		b.Fatal(err)
	}
	var out saga.Outbox
	x, err := e.Start("s-1", "subsidy", ctx, &out)
	if err != nil {
		b.Fatal(err)
	}
	for range 2 {
		c, _ := e.Command(x.ID)
		r := messages.ReplyTo(&c, messages.OK, "")
		r.Output = messages.Context{}.MustSet(c.Step+"_done", true)
		if err := e.ApplyReply(r, t0, &out); err != nil {
			b.Fatal(err)
		}
	}
	return cmd, reply, rec, out.Changed[len(out.Changed)-1]
}

// BenchmarkCompare encodes and decodes each payload once per operation:
// what the coordinator and an agent do with it (a stored saga is only
// encoded on the hot path).
func BenchmarkCompare(b *testing.B) {
	cmd, reply, rec, x := payloads(b)
	cmdData, _ := wirejson.AppendCommand(nil, &cmd)
	var raw rawCommand
	if err := json.Unmarshal(cmdData, &raw); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	b.Run("command/wirejson", func(b *testing.B) {
		for b.Loop() {
			data, _ := wirejson.AppendCommand(buf[:0], &cmd)
			if _, err := wirejson.DecodeCommand(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reply/wirejson", func(b *testing.B) {
		for b.Loop() {
			data, _ := wirejson.AppendReply(buf[:0], &reply)
			if _, err := wirejson.DecodeReply(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("record/wirejson", func(b *testing.B) {
		for b.Loop() {
			data, _ := wirejson.AppendRecord(buf[:0], &rec)
			if _, err := wirejson.DecodeRecord(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("saga/wirejson", func(b *testing.B) {
		for b.Loop() {
			if _, err := wirejson.AppendExecution(buf[:0], x); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, l := range libraries() {
		roundTrip := func(b *testing.B, v any, into func() any, check func() error) {
			for b.Loop() {
				data, err := l.marshal(v)
				if err != nil {
					b.Fatal(err)
				}
				if into == nil {
					continue
				}
				if err := l.unmarshal(data, into()); err != nil {
					b.Fatal(err)
				}
				if err := check(); err != nil {
					b.Fatal(err)
				}
			}
		}
		var c messages.Command
		var r messages.Reply
		var rc rawCommand
		var re messages.Record
		none := func() error { return nil }
		b.Run("command/"+l.name, func(b *testing.B) {
			roundTrip(b, &cmd, func() any { c = messages.Command{}; return &c }, c.Validate)
		})
		b.Run("command-raw-context/"+l.name, func(b *testing.B) {
			roundTrip(b, &raw, func() any { rc = rawCommand{}; return &rc }, none)
		})
		b.Run("reply/"+l.name, func(b *testing.B) {
			roundTrip(b, &reply, func() any { r = messages.Reply{}; return &r }, r.Validate)
		})
		b.Run("record/"+l.name, func(b *testing.B) {
			roundTrip(b, &rec, func() any { re = messages.Record{}; return &re }, none)
		})
		b.Run("saga/"+l.name, func(b *testing.B) { roundTrip(b, x, nil, nil) })
	}
}
