package wirejson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// tricky are strings that exercise every escaping rule of encoding/json.
var tricky = []string{
	"", "plain", `quote " and backslash \`, "<script>&amp;</script>", "tab\tnew\nline\rcr\bbs\fff",
	"\x00\x01\x1f\x7f", "é ü 日本", "line\u2028sep\u2029par", "bad \xff utf8 \xc3", "emoji 😀", "\ufffd",
}

func trickyContext() messages.Context {
	return messages.Context{
		"int": json.RawMessage(`500000`), "neg": json.RawMessage(`-3.5e2`), "str": json.RawMessage(`"c-17"`),
		"spaced": json.RawMessage(`{ "a" : [1, 2 ,3] }`), "html": json.RawMessage(`"<b>&"`),
		"sep": json.RawMessage("\"a\u2028b\""), "null": json.RawMessage(`null`), "nil": nil,
		"nested": json.RawMessage(`{"x":{"y":[true,false,null]}}`), "<key>": json.RawMessage(`1`),
		"é": json.RawMessage(`"é"`), "": json.RawMessage(`0`),
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	var cmds []messages.Command
	var replies []messages.Reply
	var events []messages.Event
	for i, s := range tricky {
		c := messages.Command{V: messages.Version, SagaID: s, Saga: s + "x", Step: "step", Action: messages.Action(s), Attempt: i, Seq: -i, Tick: int64(i) << 40,
			Context: trickyContext()}
		cmds = append(cmds, c)
		r := messages.ReplyTo(&c, messages.Outcome(s), s)
		r.Agent, r.Role = s, s+"r"
		r.Output = messages.Context{s: json.RawMessage(`{"k" : "v"}`)}
		replies = append(replies, r)
		events = append(events, messages.Event{V: 1, SagaID: s, Saga: s, Status: s, Tick: -int64(i), Step: s, Reason: s})
	}
	cmds = append(cmds, messages.Command{}, messages.Command{Context: messages.Context{}})
	replies = append(replies, messages.Reply{}, messages.Reply{Output: messages.Context{}})
	events = append(events, messages.Event{})
	for _, c := range cmds {
		want, err := json.Marshal(c)
		require.NoError(t, err)
		got, err := AppendCommand(nil, &c)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	for _, r := range replies {
		want, err := json.Marshal(r)
		require.NoError(t, err)
		got, err := AppendReply([]byte("prefix"), &r)
		require.NoError(t, err)
		require.Equal(t, "prefix"+string(want), string(got))
	}
	for _, ev := range events {
		want, err := json.Marshal(ev)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendEvent(nil, &ev)))
	}
}

func TestAppendJSONRefusesInvalidContext(t *testing.T) {
	for _, raw := range []string{``, `{`, `tru`, `1 2`, `"unterminated`, `[1,]`, "\"ctl\x01\"", `01`} {
		c := messages.Command{V: 1, Context: messages.Context{"k": json.RawMessage(raw)}}
		_, wantErr := json.Marshal(c)
		require.Error(t, wantErr, "%q", raw)
		_, err := AppendCommand(nil, &c)
		require.Error(t, err, "%q", raw)
		r := messages.Reply{V: 1, Output: messages.Context{"k": json.RawMessage(raw)}}
		_, err = AppendReply(nil, &r)
		require.Error(t, err, "%q", raw)
	}
}

// decodeCorpus holds payloads that probe every decoding rule: valid ones in
// several spellings, and every way to be wrong.
var decodeCorpus = []string{
	`{"v":1,"saga_id":"s-1","saga":"subsidy","step":"household_applies","action":"execute","attempt":1,"seq":1,"tick":3,"context":{"household_id":"h-1","cost":500000}}`,
	`{"v":1,"saga_id":"s-1","saga":"subsidy","step":"gov","action":"compensate","attempt":2,"seq":7,"outcome":"ok","output":{"approved":true},"agent":"a-1","reason":"r"}`,
	" \n{ \"v\" : 1 , \"saga_id\" : \"x\" , \"context\" : { \"a\" : [ 1 , 2 ] , \"b\" : { } } } \t",
	`{"V":1,"SAGA_ID":"upper","Saga":"mixed","sTeP":"s","ACTION":"execute","Attempt":1,"SEQ":1}`,
	`{"v":1,"saga_id":"first","saga_id":"second","context":{"k":1,"k":2}}`,
	`{"v":1,"unknown":{"deep":[1,{"x":null}],"s":"\u00e9"},"saga_id":"after-unknown"}`,
	`{"v":1,"saga_id":null,"attempt":null,"context":null,"output":null}`,
	`{"v":1,"context":{}}`, `{"v":1,"context":{"n":null}}`, `{"v":1,"output":{}}`,
	`{"v":1,"saga_id":"esc \" \\ \/ \b \f \n \r \t \u0041 \u00e9 \u2028 \ud83d\ude00"}`,
	`{"v":1,"saga_id":"lone \ud800 high","step":"lone \udc00 low","saga":"\ud83d\u0041 bad pair"}`,
	"{\"v\":1,\"saga_id\":\"bad \xff utf8 \xc3\",\"saga\":\"\xef\xbf\xbd\"}",
	"{\"v\":1,\"sa\xffga\":1,\"k\\u00e9y\":2}",
	`{"v":1,"saga_\u0069d":"escaped key"}`,
	`{"v":1,"ſaga":"long s folds to s","sAgA_iD":"k"}`,
	`{"v":1,"tick":-0,"seq":9223372036854775807}`,
	`{"v":1,"tick":9223372036854775808}`, `{"v":1,"tick":1.0}`, `{"v":1,"tick":1e2}`, `{"v":1,"tick":-}`,
	`{"v":1,"tick":01}`, `{"v":1,"tick":"3"}`, `{"v":1,"tick":true}`, `{"v":1,"tick":[]}`, `{"v":"1"}`,
	`{"v":1,"saga_id":5}`, `{"v":1,"saga_id":{}}`, `{"v":1,"action":[]}`, `{"v":1,"context":[]}`,
	`{"v":1,"context":"x"}`, `{"v":1,"output":5}`, `{"v":1,"context":{"a":}}`, `{"v":1,"context":{"a":1,}}`,
	`{"v":1,"saga_id":"ctl ` + "\x01" + `"}`, `{"v":1,"saga_id":"\x"}`, `{"v":1,"saga_id":"\u12"}`,
	`{"v":1,"saga_id":"unterminated`, `{"v":1,`, `{"v":1}}`, `{"v":1} {}`, `{"v":1}x`, "{}\x00", "{\"v\":1,\"context\":\x00}", `{"v":1,}`,
	`{,"v":1}`, `{"v" 1}`, `{v:1}`, `{"v":1 "x":2}`, `[1,2]`, `"str"`, `5`, `true`, `null`, ``, ` `,
	"\ufeff{\"v\":1}", `{"v":nul}`, `{"v":nullx}`, `{"v":2}`, `{}`, `{"v":1.5}`,
	`{"v":1,"deep":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"v":1,"deep":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}`,
}

// TestDecodeMatchesEncodingJSON checks the hand-written decoders against
// json.Unmarshal on every payload of the corpus: the same payloads refused,
// the same values decoded.
func TestDecodeMatchesEncodingJSON(t *testing.T) {
	for _, in := range decodeCorpus {
		checkCommandDecode(t, []byte(in))
		checkReplyDecode(t, []byte(in))
	}
}

func checkCommandDecode(t *testing.T, data []byte) {
	t.Helper()
	var want messages.Command
	wantErr := json.Unmarshal(data, &want)
	got, gotErr := commandCodec.decodeAll(data)
	require.Equal(t, wantErr == nil, gotErr == nil, "%q: encoding/json says %v, the codec %v", data, wantErr, gotErr)
	if wantErr == nil {
		require.Equal(t, want, got, "%q", data)
	}
	c1, err1 := DecodeCommand(data)
	var c2 messages.Command
	err2 := messages.Decode(data, &c2)
	if err2 == nil {
		err2 = c2.Validate()
	}
	sameOutcome(t, data, err2, err1)
	if err1 == nil {
		require.Equal(t, c2, c1)
	}
}

// sameOutcome checks that the hot decoder's error, got, falls in the same
// classes as the generic path's, want.
func sameOutcome(t *testing.T, data []byte, want, got error) {
	t.Helper()
	require.Equal(t, want == nil, got == nil, "%q: %v vs %v", data, want, got)
	for _, class := range []error{messages.ErrBadRequest, messages.ErrVersion, messages.ErrTooLarge} {
		require.Equal(t, errors.Is(want, class), errors.Is(got, class), "%q: %v vs %v", data, want, got)
	}
}

func checkReplyDecode(t *testing.T, data []byte) {
	t.Helper()
	var want messages.Reply
	wantErr := json.Unmarshal(data, &want)
	got, gotErr := replyCodec.decodeAll(data)
	require.Equal(t, wantErr == nil, gotErr == nil, "%q: encoding/json says %v, the codec %v", data, wantErr, gotErr)
	if wantErr == nil {
		require.Equal(t, want, got, "%q", data)
	}
	r1, err1 := DecodeReply(data)
	var r2 messages.Reply
	err2 := messages.Decode(data, &r2)
	if err2 == nil {
		err2 = r2.Validate()
	}
	sameOutcome(t, data, err2, err1)
	if err1 == nil {
		require.Equal(t, r2, r1)
	}
}

func TestDecodeRefusesOversizedPayloads(t *testing.T) {
	big := []byte(`{"v":1,"saga_id":"` + strings.Repeat("x", messages.MaxPayload) + `"}`)
	_, err := DecodeCommand(big)
	require.ErrorIs(t, err, messages.ErrTooLarge)
	_, err = DecodeReply(big)
	require.ErrorIs(t, err, messages.ErrTooLarge)
}

// TestRoundTrip checks that what AppendJSON writes, the decoders read back
// as the same value.
func TestRoundTrip(t *testing.T) {
	c := messages.Command{V: messages.Version, SagaID: "0b4e7c1e", Saga: "subsidy", Step: "gov", Action: messages.Compensate, Attempt: 3, Seq: 9, Tick: 12,
		Context: messages.Context{"household_id": json.RawMessage(`"h-1"`), "cost": json.RawMessage(`500000`), "nested": json.RawMessage(`{"a":[1,2]}`)}}
	data, err := AppendCommand(nil, &c)
	require.NoError(t, err)
	back, err := DecodeCommand(data)
	require.NoError(t, err)
	require.Equal(t, c, back)

	r := messages.ReplyTo(&c, messages.Failed, "budget <insufficient> & more")
	r.Agent, r.Role = "gov-1", "government"
	r.Output = messages.Context{"approved": json.RawMessage(`true`)}
	data, err = AppendReply(nil, &r)
	require.NoError(t, err)
	rback, err := DecodeReply(data)
	require.NoError(t, err)
	require.Equal(t, r, rback)
}

func FuzzDecodeCommand(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCommandDecode(t, data)
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, in := range decodeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkReplyDecode(t, data)
	})
}

func FuzzAppendJSON(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, `{"a": [1, 2]}`)
	}
	f.Add("x", `"<&>"`)
	f.Add("x", "{\"\u2028\":1}")
	f.Fuzz(func(t *testing.T, s, raw string) {
		c := messages.Command{V: 1, SagaID: s, Step: s, Context: messages.Context{s: json.RawMessage(raw)}}
		want, wantErr := json.Marshal(c)
		got, err := AppendCommand(nil, &c)
		require.Equal(t, wantErr == nil, err == nil, "%q: %v vs %v", raw, wantErr, err)
		if err == nil {
			require.Equal(t, string(want), string(got))
		}
	})
}

func BenchmarkCommandCodec(b *testing.B) {
	c := messages.Command{V: messages.Version, SagaID: "0b4e7c1e-3f1a-4bde-9c55-1f0e6f3f2a10", Saga: "bench", Step: "s2", Action: messages.Execute, Attempt: 1, Seq: 2,
		Context: messages.Context{"customer": json.RawMessage(`"c-1234"`), "amount": json.RawMessage(`1234`), "s1_done": json.RawMessage(`true`)}}
	data, _ := json.Marshal(c)
	b.Run("encoding/json/marshal", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(c)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = AppendCommand(buf[:0], &c)
		}
	})
	b.Run("encoding/json/unmarshal", func(b *testing.B) {
		for b.Loop() {
			var x messages.Command
			_ = json.Unmarshal(data, &x)
		}
	})
	b.Run("DecodeCommand", func(b *testing.B) {
		for b.Loop() {
			_, _ = DecodeCommand(data)
		}
	})
}

func TestDecodeCommandAndReply(t *testing.T) {
	c := messages.Command{V: messages.Version, SagaID: "s-1", Saga: "subsidy", Step: "government_evaluates",
		Action: messages.Execute, Attempt: 1, Seq: 2, Tick: 7, Context: messages.Context{}.MustSet("cost", 5)}
	data, err := json.Marshal(c)
	require.NoError(t, err)
	got, err := DecodeCommand(data)
	require.NoError(t, err)
	require.Equal(t, c, got)

	r := messages.ReplyTo(&c, messages.OK, "")
	r.Output = messages.Context{}.MustSet("approved", true)
	r.Agent, r.Role = "government-1", "government"
	data, err = json.Marshal(r)
	require.NoError(t, err)
	gotR, err := DecodeReply(data)
	require.NoError(t, err)
	require.Equal(t, r, gotR)

	tests := []struct {
		name string
		data string
		want error
	}{
		{"not JSON", `{`, messages.ErrBadRequest},
		{"wrong version", `{"v":3,"saga_id":"a","saga":"b","step":"c","action":"execute","attempt":1,"seq":1}`, messages.ErrVersion},
		{"decodes but does not validate", `{"v":1,"saga_id":"a","saga":"b","step":"c.d","action":"execute","attempt":1,"seq":1}`, messages.ErrBadRequest},
		{"too large", `"` + strings.Repeat("a", messages.MaxPayload) + `"`, messages.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeCommand([]byte(tt.data))
			require.ErrorIs(t, err, tt.want)
			_, err = DecodeReply([]byte(strings.Replace(tt.data, `"seq":1`, `"seq":1,"outcome":"ok"`, 1)))
			require.ErrorIs(t, err, tt.want)
		})
	}
	_, err = DecodeCommand([]byte(`{`))
	require.ErrorContains(t, err, "decode command")
	_, err = DecodeReply([]byte(`{`))
	require.ErrorContains(t, err, "decode reply")
}
