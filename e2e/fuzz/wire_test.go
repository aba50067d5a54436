package fuzz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// fuzzDuration is how long TestWireFuzz fuzzes: NATSAGA_FUZZ_DURATION, or
// a few seconds under a plain go test.
func fuzzDuration(t *testing.T) time.Duration {
	v := os.Getenv("NATSAGA_FUZZ_DURATION")
	if v == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "NATSAGA_FUZZ_DURATION")
	return d
}

func fuzzSeed(t *testing.T) uint64 {
	if v := os.Getenv("NATSAGA_FUZZ_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "NATSAGA_FUZZ_SEED")
		return s
	}
	return uint64(time.Now().UnixNano())
}

// fuzzer generates hostile input from a seed.
type fuzzer struct {
	t   *testing.T
	s   *system
	rnd *rand.Rand
	// conns are the connections of the users that may publish, by user.
	conns map[string]*nats.Conn
	// ids are the sagas the fuzzer knows of, to aim at.
	ids []string
	// tick is the clock as the fuzzer moved it.
	tick int64
	// sent counts what was sent, by kind.
	sent map[string]int
	// touched marks the sagas the batch's input aimed at.
	touched map[string]bool
}

// ownSteps are each agent role's steps, by saga type.
func ownSteps(role string) map[string][]string {
	out := map[string][]string{}
	for _, d := range flood.Definitions() {
		for _, st := range d.Steps {
			if st.Role == role {
				out[d.Subject] = append(out[d.Subject], st.Name)
			}
		}
	}
	return out
}

// token returns an identifier: a valid one, one of the sagas in flight,
// or one that breaks the grammar in some way.
func (f *fuzzer) token() string {
	switch f.rnd.IntN(10) {
	case 0:
		return strings.Repeat("x", messages.MaxTokenLen+1+f.rnd.IntN(5000))
	case 1:
		return ""
	case 2:
		odd := []string{".", "*", ">", " ", "é", "\x00", "$", "/", "=", ":", "\t", "\u2028", "%", "\\"}
		return "a" + odd[f.rnd.IntN(len(odd))] + "b"
	case 3, 4, 5:
		if len(f.ids) > 0 {
			id := f.ids[f.rnd.IntN(len(f.ids))]
			f.touched[id] = true
			return id
		}
	}
	return fmt.Sprintf("fz-%d", f.rnd.IntN(1000))
}

// subjectToken is a token to put in a subject: the server closes the
// connection of a client whose subject passes its control line limit (4
// KiB), which would only end the fuzzer's own connection.
func (f *fuzzer) subjectToken() string {
	tok := f.token()
	return tok[:min(len(tok), 1000)]
}

// number returns a JSON number or a value that is not one, at the edges.
func (f *fuzzer) number() string {
	edge := []string{"0", "-1", "1", strconv.FormatInt(math.MaxInt64, 10), strconv.FormatInt(math.MinInt64, 10),
		"9223372036854775808", "-9223372036854775809", "2147483648", "9007199254740993", "1e400", "1.5", "-0", `"7"`,
		"null", "true", "[]", "{}", strconv.Itoa(messages.MaxTickJump + 1)}
	return edge[f.rnd.IntN(len(edge))]
}

func (f *fuzzer) str(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// payload returns arbitrary bytes or JSON of about the shape wanted,
// with fields from fields: each value an identifier, a number or junk.
func (f *fuzzer) payload(fields ...string) []byte {
	switch f.rnd.IntN(8) {
	case 0:
		b := make([]byte, f.rnd.IntN(512))
		for i := range b {
			b[i] = byte(f.rnd.UintN(256))
		}
		return b
	case 1:
		return []byte(`{"v":1,"pad":"` + strings.Repeat("p", messages.MaxPayload) + `"}`)
	case 2:
		return []byte(`{"v":1,` + strings.Repeat(`"a":[`, 200))
	}
	var parts []string
	if f.rnd.IntN(6) > 0 {
		parts = append(parts, `"v":1`)
	} else {
		parts = append(parts, `"v":`+f.number())
	}
	for _, k := range fields {
		if f.rnd.IntN(5) == 0 {
			continue
		}
		var v string
		switch f.rnd.IntN(3) {
		case 0:
			v = f.str(f.token())
		case 1:
			v = f.number()
		default:
			v = `{"household_id":` + f.str(f.token()) + `,"` + flood.KeyDamage + `":` + f.number() + `,"` +
				flood.KeySubsidyCost + `":` + f.number() + `,"` + flood.KeyContractorTicks + `":` + f.number() + `}`
		}
		parts = append(parts, f.str(k)+":"+v)
	}
	return []byte("{" + strings.Join(parts, ",") + "}")
}

// request sends data on subject as user and requires an answer: a
// request is never met with silence. It returns the answer.
func (f *fuzzer) request(user, subject string, data []byte) []byte {
	f.t.Helper()
	kind := subject
	if strings.HasPrefix(subject, "natsaga.start.") {
		kind = messages.StartSubjects
	}
	f.sent[kind]++
	m, err := f.conns[user].Request(subject, data, 10*time.Second)
	require.NoError(f.t, err, "%s on %.100s with %.200q: no answer", user, subject, data)
	return m.Data
}

// start sends a hostile start as user; a start refused must leave no saga
// behind, and one accepted is a saga like any other.
func (f *fuzzer) start(user string) {
	sagaType := []string{flood.Subsidy, flood.Insurance, flood.Elevation, f.subjectToken()}[f.rnd.IntN(4)]
	if !messages.ValidToken(sagaType) && (strings.ContainsAny(sagaType, " \t\x00*>.") || sagaType == "") {
		sagaType = flood.Subsidy // the server refuses such subjects itself
	}
	data := f.payload("saga_id", "context")
	var resp messages.StartResponse
	answer := f.request(user, messages.StartSubject(sagaType), data)
	require.NoError(f.t, json.Unmarshal(answer, &resp), "%s", answer)
	var req messages.StartRequest
	_ = json.Unmarshal(data, &req)
	if resp.Error != nil {
		if messages.ValidToken(req.SagaID) && !slices.Contains(f.ids, req.SagaID) && resp.Error.Code != messages.CodeConflict {
			var st messages.StatusResponse
			require.NoError(f.t, json.Unmarshal(f.request(user, messages.StatusSubject,
				[]byte(`{"v":1,"saga_id":`+f.str(req.SagaID)+`}`)), &st))
			require.NotNil(f.t, st.Error, "refused start %s (%s) left saga %s behind", data, resp.Error.Message, req.SagaID)
		}
		return
	}
	if !slices.Contains(f.ids, resp.SagaID) {
		f.ids = append(f.ids, resp.SagaID)
		f.s.started[resp.SagaID] = sagaType
	}
}

// startBatch sends a hostile batch of starts as user: junk, or a list of
// up to eight hostile starts. A batch refused whole, or a start refused in
// it, must leave no saga behind; each start accepted is a saga like any
// other, and every start of a batch looked at has its answer.
func (f *fuzzer) startBatch(user string) {
	var data []byte
	var starts []json.RawMessage
	if f.rnd.IntN(4) == 0 {
		data = f.payload("starts")
	} else {
		for range f.rnd.IntN(9) {
			st := f.payload("saga", "saga_id", "context")
			if f.rnd.IntN(2) == 0 {
				st = []byte(`{"saga":` + f.str([]string{flood.Subsidy, flood.Insurance, flood.Elevation, f.token()}[f.rnd.IntN(4)]) +
					`,"saga_id":` + f.str(f.token()) + `,"context":{}}`)
			}
			if !json.Valid(st) {
				st = []byte(f.str(string(st)))
			}
			starts = append(starts, st)
		}
		// Within the server's payload limit, which would refuse a larger
		// request before the coordinator sees it: starts are dropped
		// from the end until it fits (the coordinator's own limit, 256
		// KiB, is below it).
		for {
			data, _ = json.Marshal(struct {
				V      int               `json:"v"`
				Starts []json.RawMessage `json:"starts"`
			}{1, starts})
			if int64(len(data)) <= f.conns[user].MaxPayload() || len(starts) <= 1 {
				break
			}
			starts = starts[:len(starts)-1]
		}
	}
	var resp messages.StartBatchResponse
	answer := f.request(user, messages.StartBatchSubject, data)
	require.NoError(f.t, json.Unmarshal(answer, &resp), "%s", answer)
	if resp.Error == nil {
		require.Len(f.t, resp.Results, len(starts), "an answer to every start of %.300s", data)
	}
	// The started ones first: a start refused may share its id with one
	// after it in the batch that started.
	for i, raw := range starts {
		var st messages.BatchedStart
		_ = json.Unmarshal(raw, &st)
		if resp.Error == nil && resp.Results[i].Error == nil {
			if id := resp.Results[i].SagaID; !slices.Contains(f.ids, id) {
				f.ids = append(f.ids, id)
				f.s.started[id] = st.Saga
			}
		}
	}
	for i, raw := range starts {
		var st messages.BatchedStart
		_ = json.Unmarshal(raw, &st)
		if resp.Error == nil && resp.Results[i].Error == nil {
			continue
		}
		code := ""
		if resp.Error == nil {
			code = resp.Results[i].Error.Code
		}
		if messages.ValidToken(st.SagaID) && !slices.Contains(f.ids, st.SagaID) && code != messages.CodeConflict {
			var status messages.StatusResponse
			require.NoError(f.t, json.Unmarshal(f.request(user, messages.StatusSubject,
				[]byte(`{"v":1,"saga_id":`+f.str(st.SagaID)+`}`)), &status))
			require.NotNil(f.t, status.Error, "refused start %s left saga %s behind", raw, st.SagaID)
		}
	}
}

// tick sends a tick: mostly a hostile one that must be refused and leave
// the clock, sometimes the next tick.
func (f *fuzzer) sendTick(user string) {
	var ack messages.TickAck
	if f.rnd.IntN(4) == 0 {
		f.tick++
		require.NoError(f.t, json.Unmarshal(f.request(user, messages.TickSubject, []byte(`{"v":1,"tick":`+strconv.FormatInt(f.tick, 10)+`}`)), &ack))
		require.Nil(f.t, ack.Error)
		return
	}
	data := []byte(`{"v":1,"tick":` + f.number() + `}`)
	switch f.rnd.IntN(4) {
	case 0:
		data = f.payload("tick")
	case 1:
		data = []byte(`{"v":1,"tick":` + strconv.FormatInt(f.tick+messages.MaxTickJump+1, 10) + `}`)
	}
	require.NoError(f.t, json.Unmarshal(f.request(user, messages.TickSubject, data), &ack), "tick %s", data)
	if ack.Error == nil {
		require.LessOrEqual(f.t, ack.Tick, f.tick+messages.MaxTickJump, "tick %s moved the clock from %d to %d", data, f.tick, ack.Tick)
		f.tick = max(f.tick, ack.Tick)
	} else {
		var sum messages.Summary
		require.NoError(f.t, json.Unmarshal(f.request(user, messages.SummarySubject, nil), &sum))
		require.Equal(f.t, f.tick, sum.Tick, "refused tick %.200q moved the clock", data)
	}
}

// query sends a hostile status, list, retry, abort, register or summary request;
// each gets an answer.
func (f *fuzzer) query(user string) {
	switch f.rnd.IntN(5) {
	case 4:
		if user == operatorUser {
			f.register(user)
		}
	case 0:
		f.request(user, messages.StatusSubject, f.payload("saga_id"))
	case 1:
		data := f.payload("status", "limit", "after")
		if f.rnd.IntN(2) == 0 {
			data = []byte(`{"v":1,"limit":` + f.number() + `,"after":` + f.str(f.token()+":"+f.token()) + `}`)
		}
		f.request(user, messages.ListSubject, data)
	case 2:
		if user == operatorUser {
			data := f.payload("saga_id")
			if f.rnd.IntN(2) == 0 {
				// Well formed, mostly at a saga that is not failed.
				data = []byte(`{"v":1,"saga_id":` + f.str(f.token()) + `}`)
			}
			subject := messages.RetrySubject
			if f.rnd.IntN(2) == 0 {
				subject = messages.AbortSubject
			}
			f.request(user, subject, data)
		}
	default:
		if f.rnd.IntN(2) == 0 {
			f.request(user, messages.SummarySubject, f.payload())
			return
		}
		// Every agent answers statistics, whatever the request holds.
		f.sent[messages.AgentStatsSubject]++
		require.NoError(f.t, f.conns[user].Publish(messages.AgentStatsSubject, f.payload("role")))
	}
}

// register sends, as user (the operator, who may register), a definitions
// file that breaks a rule of the format, or junk: it must be refused, and
// the definitions the coordinator runs stay as they were.
func (f *fuzzer) register(user string) {
	bad := []string{
		`{"roles":["household"],"sagas":[{"name":"x","subject":"x","steps":[]}]}`,
		`{"roles":["household"],"sagas":[{"name":"x","subject":"x","timeout_ticks":0,"steps":[{"name":"a","role":"household"}]}]}`,
		`{"roles":["household"],"sagas":[{"name":"x","subject":"x","timeout_ticks":-3,"steps":[{"name":"a","role":"household"}]}]}`,
		`{"roles":["household"],"sagas":[{"name":"x","subject":"x","steps":[{"name":"a","role":"nobody"}]}]}`,
		`{"roles":["household"],"sagas":[{"name":"x","subject":"x","steps":[{"name":"a","role":"household"},{"name":"a","role":"household"}]}]}`,
		`{"roles":["household"],"sagas":[{"name":` + f.str(f.token()+".x") + `,"subject":"x","steps":[{"name":"a","role":"household"}]}]}`,
		`{"roles":["household"],"sagas":[{"name":"subsidy","subject":"subsidy","version":1,"steps":[{"name":"a","role":"household"}]}]}`,
	}
	data := []byte(`{"v":1,"definitions":` + bad[f.rnd.IntN(len(bad))] + `}`)
	if f.rnd.IntN(3) == 0 {
		data = f.payload("definitions")
	}
	var before, after messages.Summary
	require.NoError(f.t, json.Unmarshal(f.request(user, messages.SummarySubject, nil), &before))
	var resp messages.RegisterResponse
	require.NoError(f.t, json.Unmarshal(f.request(user, messages.RegisterSubject, data), &resp))
	require.NotNil(f.t, resp.Error, "definitions %.300s registered", data)
	require.NoError(f.t, json.Unmarshal(f.request(user, messages.SummarySubject, nil), &after))
	require.Equal(f.t, before.Registered, after.Registered, "refused definitions %.300s changed what is registered", data)
}

// answer publishes, as an agent role, a reply or a barrier record it has
// no right to count: a record in its own stream naming another role's
// step, or a reply on its own step's subject for a command not in flight.
func (f *fuzzer) answer(role string) {
	nc := f.conns[role]
	own := ownSteps(role)
	var other []string
	for _, d := range flood.Definitions() {
		for _, st := range d.Steps {
			if st.Role != role {
				other = append(other, st.Name)
			}
		}
	}
	outcome := []string{`"ok"`, `"failed"`, `"error"`, `"working"`, `"maybe"`, `null`}[f.rnd.IntN(6)]
	output := `{"` + flood.KeyPayout + `":` + f.number() + `,"` + flood.KeyApproved + `":true,"` + flood.KeyGrant + `":` + f.number() + `}`
	if f.rnd.IntN(3) == 0 && f.aimed(role, nc, output) {
		return
	}
	if f.rnd.IntN(2) == 0 {
		step := other[f.rnd.IntN(len(other))]
		if f.rnd.IntN(4) == 0 {
			step = f.subjectToken()
		}
		seq := []string{"1", "2", "3", f.number()}[f.rnd.IntN(4)]
		rec := `{"execute":{"outcome":` + outcome + `,"seq":` + seq + `,"output":` + output + `,"at":"2026-12-01T00:00:00Z"}}`
		if f.rnd.IntN(4) == 0 {
			rec = string(f.payload("execute", "compensate"))
		}
		key := f.str(f.subjectToken() + "/" + step)
		if f.rnd.IntN(5) == 0 {
			key = []string{`""`, `"x"`, `"a/b/c"`, `"/"`, `7`, `null`}[f.rnd.IntN(6)]
		}
		msg := `{"id":"fuzz","entries":[{"key":` + key + `,"value":` + rec + `}]}`
		if f.rnd.IntN(5) == 0 {
			msg = string(f.payload("id", "entries", "key", "value"))
		}
		f.sent["record"]++
		require.NoError(f.t, nc.Publish(messages.RecordSubject(role), []byte(msg)))
		return
	}
	sagaTypes := make([]string, 0, len(own))
	for s := range own {
		sagaTypes = append(sagaTypes, s)
	}
	slices.Sort(sagaTypes)
	sagaType := sagaTypes[f.rnd.IntN(len(sagaTypes))]
	steps := own[sagaType]
	step := steps[f.rnd.IntN(len(steps))]
	// A sequence number no command reaches; the body may name another
	// saga type or step than its subject.
	seq := []string{"1099511627776", strconv.FormatInt(math.MaxInt64, 10), "0", "-5"}[f.rnd.IntN(4)]
	bodySaga, bodyStep := sagaType, step
	if f.rnd.IntN(3) == 0 {
		bodySaga, bodyStep = f.token(), other[f.rnd.IntN(len(other))]
	}
	reply := `{"v":1,"saga_id":` + f.str(f.token()) + `,"saga":` + f.str(bodySaga) + `,"step":` + f.str(bodyStep) +
		`,"action":` + []string{`"execute"`, `"compensate"`, `"undo"`}[f.rnd.IntN(3)] + `,"attempt":` + f.number() +
		`,"seq":` + seq + `,"outcome":` + outcome + `,"reason":"fuzz","output":` + output + `,"agent":` + f.str(f.token()) + `}`
	if f.rnd.IntN(4) == 0 {
		reply = string(f.payload("saga_id", "saga", "step", "action", "attempt", "seq", "outcome", "output"))
	}
	f.sent["reply"]++
	require.NoError(f.t, nc.Publish(messages.ReplySubject(sagaType, step), []byte(reply)))
}

// aimed forges, as role, the exact answer of another role to a command
// in flight: the sequence number and step of a saga the driver sees,
// recorded in role's own stream, and on the other role's reply subject
// (which the permissions deny). It reports false when no saga it knows is
// waiting on another role.
func (f *fuzzer) aimed(role string, nc *nats.Conn, output string) bool {
	if len(f.ids) == 0 {
		return false
	}
	id := f.ids[f.rnd.IntN(len(f.ids))]
	f.touched[id] = true
	var resp messages.StatusResponse
	require.NoError(f.t, json.Unmarshal(f.request(driverUser, messages.StatusSubject, []byte(`{"v":1,"saga_id":`+f.str(id)+`}`)), &resp))
	var x saga.Execution
	if resp.Error != nil || json.Unmarshal(resp.Saga, &x) != nil || x.Current < 0 || x.Status.Terminal() {
		return false
	}
	var step saga.Step
	for _, d := range flood.Definitions() {
		if d.Subject == x.Saga && x.Current < len(d.Steps) {
			step = d.Steps[x.Current]
		}
	}
	if step.Role == "" || step.Role == role {
		return false
	}
	action := "execute"
	if x.Action == messages.Compensate {
		action = "compensate"
	}
	rec := `{"` + action + `":{"outcome":"ok","seq":` + strconv.Itoa(x.Seq) + `,"output":` + output + `,"at":"2026-12-01T00:00:00Z"}}`
	msg := `{"id":"fuzz","entries":[{"key":` + f.str(messages.RecordKey(id, step.Name)) + `,"value":` + rec + `}]}`
	f.sent["aimed record"]++
	require.NoError(f.t, nc.Publish(messages.RecordSubject(role), []byte(msg)))
	reply := messages.Reply{V: 1, SagaID: id, Saga: x.Saga, Step: step.Name, Action: x.Action, Attempt: x.Attempt, Seq: x.Seq,
		Outcome: messages.OK, Output: messages.Context{}.MustSet(flood.KeyPayout, 100_000_00)}
	data, err := json.Marshal(reply)
	require.NoError(f.t, err)
	require.NoError(f.t, nc.Publish(messages.ReplySubject(x.Saga, step.Name), data)) // denied by the permissions
	return true
}

// houses reads role's records of the households hs.
func (s *system) houses(role string, hs map[string]bool) flood.Houses {
	s.t.Helper()
	store, err := participant.OpenStore(context.Background(), s.inspector, role, false, 1)
	require.NoError(s.t, err)
	out := flood.Houses{}
	for h := range hs {
		var house flood.House
		if _, err := store.Get(context.Background(), flood.HouseKey(h), &house); err == nil {
			out[h] = house
		}
	}
	return out
}

// TestWireFuzz runs the system under auth.conf and, for the configured
// duration, sends seeded hostile input as every user that may publish, on
// every subject its permissions allow but the JetStream API and its own
// state (see docs/guarantees.md), beside honest sagas. After each batch
// every process is alive and answers, the invariants that hold while
// sagas are in flight hold, and the sagas the batch aimed at only moved on
// as sagas do (see midway.check); at the end every saga finishes and the
// ledgers hold exactly what the completed sagas moved.
func TestWireFuzz(t *testing.T) {
	d := fuzzDuration(t)
	seed := fuzzSeed(t)
	t.Logf("fuzzing for %s from seed %d (NATSAGA_FUZZ_SEED=%d replays it)", d, seed, seed)
	s := newSystem(t)
	s.started = map[string]string{}
	for _, role := range agentRoles {
		s.agent(role)
	}
	s.waitAgents(len(agentRoles))
	f := &fuzzer{t: t, s: s, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), conns: map[string]*nats.Conn{}, sent: map[string]int{}}
	m := newMidway(s)
	for _, u := range append([]string{driverUser, operatorUser}, agentRoles...) {
		f.conns[u] = s.connect(u)
	}

	honest := map[string]bool{}
	end := time.Now().Add(d)
	batches := 0
	for batch := 0; time.Now().Before(end); batch++ {
		f.touched = map[string]bool{}
		// Honest sagas to aim at.
		for i := range 3 {
			h := fmt.Sprintf("h-%d-%d", batch, i)
			id := s.start([]string{flood.Subsidy, flood.Insurance, flood.Elevation}[i],
				messages.Context{}.MustSet(flood.KeyHousehold, h).MustSet(flood.KeyDamage, 3_000_00).MustSet(flood.KeyContractorTicks, 1))
			s.started[id] = []string{flood.Subsidy, flood.Insurance, flood.Elevation}[i]
			honest[id] = true
			f.ids = append(f.ids, id)
		}
		for range 50 {
			switch user := []string{driverUser, operatorUser, flood.Household, flood.Government, flood.Insurer, flood.Contractor}[f.rnd.IntN(6)]; user {
			case driverUser, operatorUser:
				switch f.rnd.IntN(4) {
				case 0:
					f.start(user)
				case 1:
					f.sendTick(user)
				case 2:
					f.startBatch(user)
				default:
					f.query(user)
				}
			default:
				f.answer(user)
			}
		}
		m.check(batch, f.tick, f.touched)
		batches++
	}
	t.Logf("%d batches: %v; %d sagas ended and checked mid-run", batches, f.sent, len(m.settled))

	// Let every saga finish: the clock moves on until none is active.
	require.Eventually(t, func() bool {
		f.tick++
		var ack messages.TickAck
		s.request(messages.TickSubject, messages.Tick{V: 1, Tick: f.tick}, &ack)
		return ack.Error == nil && ack.Summary != nil && ack.Summary.Active == 0
	}, 60*time.Second, 50*time.Millisecond, "sagas still active")
	final := map[string]saga.Execution{}
	for id := range s.started {
		final[id] = s.status(id)
	}
	open := func(role string) flood.Ledger {
		a := agentcmd.DefaultLedger[role]
		return flood.Ledger{Initial: a, Balance: a, Spent: map[string]int64{}}
	}
	// Every step a saga completed was answered by the role owning it: the
	// output the saga holds is the one in that role's barrier record.
	for id, x := range final {
		for _, name := range x.Completed {
			require.Empty(t, m.owns(id, x, name))
		}
	}
	households := map[string]bool{}
	for id, x := range final {
		if h, err := x.Context.String(flood.KeyHousehold); err == nil && messages.ValidToken(h) {
			households[h] = true
		}
		// The honest claims pay what the insurer computes, whatever was
		// forged on the way.
		if honest[id] && x.Saga == flood.Insurance && x.Status == saga.Completed {
			payout, err := x.Context.Int64(flood.KeyPayout)
			require.NoError(t, err)
			require.Equal(t, int64(3_000_00-flood.DefaultDeductible), payout, "saga %s", id)
		}
	}
	v := flood.CheckInvariants(flood.Observation{Started: s.started, Final: final,
		Government: flood.LedgerChange{Before: open(flood.Government), After: s.ledger(flood.Government)},
		Insurer:    flood.LedgerChange{Before: open(flood.Insurer), After: s.ledger(flood.Insurer)},
		Households: s.houses(flood.Household, households), ContractorBefore: flood.Houses{},
		ContractorAfter: s.houses(flood.Contractor, households)})
	require.Empty(t, v)
	s.alive()
	t.Logf("refused answers: %d", s.coord.Refused())
}
