package messages_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

func TestIsCommandSubject(t *testing.T) {
	subjects := []string{"saga.subsidy.apply", "saga.subsidy.apply.compensate", "saga.subsidy.applyx", "saga.subsidyx.apply",
		"saga.subsidy", "saga.subsidy.", "natsaga.reply.subsidy.apply", "saga.subsidy.apply.compensatex", "",
		"saga.subsidy.compensate", "saga.subsidy..compensate"}
	for _, subject := range subjects {
		for _, saga := range []string{"subsidy", "subsidyx", "sub"} {
			for _, step := range []string{"apply", "applyx", "compensate"} {
				for _, action := range []messages.Action{messages.Execute, messages.Compensate} {
					want := subject == messages.CommandSubject(saga, step, action)
					require.Equal(t, want, messages.IsCommandSubject(subject, saga, step, action), "%s %s %s %s", subject, saga, step, action)
					c := messages.Command{Saga: saga, Step: step, Action: action}
					require.Equal(t, want, c.OnSubject(subject))
				}
			}
		}
	}
}

func TestParseStartSubject(t *testing.T) {
	saga, ok := messages.ParseStartSubject(messages.StartSubject("subsidy"))
	require.True(t, ok)
	require.Equal(t, "subsidy", saga)
	for _, bad := range []string{"natsaga.start", "natsaga.start.", "natsaga.start.a.b", "saga.subsidy.x.execute", "subsidy"} {
		_, ok := messages.ParseStartSubject(bad)
		require.False(t, ok, bad)
	}
}

func TestClipAndQuote(t *testing.T) {
	long := strings.Repeat("a", 100)
	for _, tc := range []struct{ in, clip, quote string }{
		{"natsaga.reply.x.y", "natsaga.reply.x.y", `"natsaga.reply.x.y"`},
		{"a\x00b", "a\x00b", `"a\x00b"`},
		{long, long[:80] + "... (100 bytes)", `"` + long[:80] + `"... (100 bytes)`},
	} {
		require.Equal(t, tc.clip, messages.Clip(tc.in))
		require.Equal(t, tc.quote, messages.Quote(tc.in))
	}
}

func TestValidKey(t *testing.T) {
	for key, want := range map[string]bool{
		"stock": true, "patient.p-17": true, "house.h_1": true, "a.b.c.d.e.f.g.h": true,
		"": false, "a b": false, "q.*": false, "q.>": false, "*": false, "q..r": false, ".q": false, "q.": false,
		"a.b.c.d.e.f.g.h.i": false, "é": false, strings.Repeat("x", 65): false,
	} {
		require.Equal(t, want, messages.ValidKey(key), "%q", key)
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, c := range []struct {
		filter, subject string
		want            bool
	}{
		{"saga.job.file", "saga.job.file", true},
		{"saga.job.file", "saga.job.fil", false},
		{"saga.job.file", "saga.job.file.compensate", false},
		{"saga.job.file.compensate", "saga.job.file", false},
		{"saga.*.file", "saga.job.file", true},
		{"saga.*.*", "saga.job.file.compensate", false},
		{"saga.*.*.compensate", "saga.job.file.compensate", true},
		{"saga.>", "saga.job.file.compensate", true},
		{"saga.job.>", "saga.job.file", true},
		{"saga.job.>", "saga.job", false},
		{">", "saga.job.file", true},
		{"*", "saga", true},
		{"*", "saga.job", false},
		{"saga.>.file", "saga.job.file", false},
	} {
		require.Equal(t, c.want, messages.SubjectMatches(c.filter, c.subject), "%s takes %s", c.filter, c.subject)
	}
}

// FuzzSubjectMatches checks SubjectMatches against the server's own rule
// (server.SubjectMatchesFilter) on valid filters and literal subjects.
// messages keeps its own: it depends on the standard library alone, and
// the coordinator and the agents, which use it, do not link the server.
func FuzzSubjectMatches(f *testing.F) {
	for _, c := range [][2]string{{"saga.*.*", "saga.job.file"}, {"saga.>", "saga.job.file.compensate"}, {">", "a"},
		{"a.*.c", "a.b.c"}, {"a.b", "a.b.c"}, {"*.*", "a"}} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, filter, subject string) {
		if !server.IsValidSubject(filter) || !server.IsValidLiteralSubject(subject) {
			return
		}
		for tok := range strings.SplitSeq(filter, ".") {
			if len(tok) > 1 && strings.ContainsAny(tok, "*>") {
				return // a token such as "*0", which the server reads as "*" here alone
			}
		}
		require.Equal(t, server.SubjectMatchesFilter(subject, filter), messages.SubjectMatches(filter, subject), "%q takes %q", filter, subject)
	})
}
