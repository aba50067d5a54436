package messages

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Version is the version of every payload but the batches ([BatchVersion]),
// carried in its "v"; a payload with another version is refused with
// [ErrVersion]. The wire protocol as a whole is at version 3
// (docs/protocol.md): versions 2 and 3 added the batches and the agents'
// record logs, and changed no payload of version 1.
const Version = 1

// MaxPayload is the largest payload natsaga decodes, in bytes. A larger one
// is refused with [ErrTooLarge] before any parsing.
const MaxPayload = 256 << 10

// Errors that decoding and validation wrap. Test with errors.Is.
var (
	ErrBadRequest = errors.New("bad request")
	ErrVersion    = errors.New("unsupported protocol version")
	ErrTooLarge   = errors.New("payload too large")
	ErrMissingKey = errors.New("missing key")
	// ErrNilContext: Set on a nil [Context], which has no map to set in;
	// make one with messages.Context{}.
	ErrNilContext = errors.New("set on a nil Context (make one with messages.Context{})")
	// ErrBusy: the coordinator is at one of its limits (the sagas in
	// flight it admits, the reads of its bucket at once) or between two
	// terms; the request did nothing and may be sent again after a
	// backoff. The error that wraps it says which.
	ErrBusy = errors.New("busy")
)

// Action says whether a command runs a step or undoes it.
type Action string

// The two actions.
const (
	Execute    Action = "execute"
	Compensate Action = "compensate"
)

// Valid reports whether a is a known action.
func (a Action) Valid() bool { return a == Execute || a == Compensate }

// Outcome is an agent's answer to a command.
type Outcome string

// The outcomes an agent may reply with.
const (
	// OK: the action took effect (or, for a compensation, there was nothing
	// to undo). Output is merged into the saga context.
	OK Outcome = "ok"
	// Failed: a business rejection, such as an exhausted budget. It is never
	// retried: an execute that failed starts the rollback.
	Failed Outcome = "failed"
	// Error: a transient failure. The coordinator retries the command with
	// backoff, within the step's retry policy.
	Error Outcome = "error"
	// Working: the agent accepted the command and will answer later, after
	// simulation time has passed, at the tick it declares in Reply.Until.
	// The step's tick timeout still applies.
	Working Outcome = "working"
)

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool { return o == OK || o == Failed || o == Error || o == Working }

// Command asks an agent to execute or compensate one step of one saga. It is
// published on [CommandSubject] into [CommandStream].
type Command struct {
	V       int    `json:"v"`
	SagaID  string `json:"saga_id"`
	Saga    string `json:"saga"`
	Step    string `json:"step"`
	Action  Action `json:"action"`
	Attempt int    `json:"attempt"`
	Seq     int    `json:"seq"`
	Tick    int64  `json:"tick"`
	// Rank is the saga's rank, which a simulation driver fixes when it
	// starts the saga: where commands of different sagas contend for the
	// same state in one round, the coordinator releases them in rank
	// order. 0 for a saga started without one.
	Rank    int64   `json:"rank,omitempty"`
	Context Context `json:"context"`
}

// Subject is the subject c is published on.
func (c *Command) Subject() string { return CommandSubject(c.Saga, c.Step, c.Action) }

// OnSubject reports whether subject is c.Subject(), without building it.
func (c *Command) OnSubject(subject string) bool {
	return IsCommandSubject(subject, c.Saga, c.Step, c.Action)
}

// Validate returns an error wrapping [ErrBadRequest] or [ErrVersion] when c
// is not a well-formed command.
func (c *Command) Validate() error {
	if err := checkCorrelation("command", c.V, c.SagaID, c.Saga, c.Step, c.Action, c.Attempt, c.Seq); err != nil {
		return err
	}
	if c.Rank < 0 {
		return fmt.Errorf("command rank %d is negative: %w", c.Rank, ErrBadRequest)
	}
	if c.Tick < 0 {
		return fmt.Errorf("command tick %d is negative: %w", c.Tick, ErrBadRequest)
	}
	return nil
}

// checkCorrelation checks the fields a command and its reply share: the
// version and what identifies the command.
func checkCorrelation(kind string, v int, sagaID, saga, step string, action Action, attempt, seq int) error {
	if v != Version {
		return fmt.Errorf("%s version %d: %w", kind, v, ErrVersion)
	}
	if err := errors.Join(CheckToken("saga_id", sagaID), CheckToken("saga", saga), CheckToken("step", step)); err != nil {
		return err
	}
	if !action.Valid() {
		return fmt.Errorf("%s action %q: %w", kind, action, ErrBadRequest)
	}
	if attempt < 1 || seq < 1 {
		return fmt.Errorf("%s attempt %d, seq %d must be positive: %w", kind, attempt, seq, ErrBadRequest)
	}
	return nil
}

// Reply is an agent's answer to a [Command], published on [ReplySubject]
// into [ReplyStream]. It echoes the command's identifying fields so the
// coordinator can correlate it; a reply that matches nothing outstanding is
// ignored.
type Reply struct {
	V       int     `json:"v"`
	SagaID  string  `json:"saga_id"`
	Saga    string  `json:"saga"`
	Step    string  `json:"step"`
	Action  Action  `json:"action"`
	Attempt int     `json:"attempt"`
	Seq     int     `json:"seq"`
	Outcome Outcome `json:"outcome"`
	Reason  string  `json:"reason,omitempty"`
	Output  Context `json:"output,omitempty"`
	// Until is set on a working reply: the tick at which the agent will
	// give its final answer. A tick is not quiet while a working command
	// whose Until has come is unanswered; an answer that arrives before
	// its Until is held back until that tick.
	Until int64  `json:"until,omitempty"`
	Agent string `json:"agent,omitempty"`
	// Role, optional, is the role of the agent that answers. natsaga's
	// Go agents set it: a coordinator refuses a reply whose role is not
	// its step's, as it refuses such a role's records, so that an agent
	// that serves another role's step by mistake answers nothing, with or
	// without permissions.
	Role string `json:"role,omitempty"`
}

// ReplyTo returns a reply to c with outcome and reason, echoing c's
// identifying fields.
func ReplyTo(c *Command, outcome Outcome, reason string) Reply {
	return Reply{V: Version, SagaID: c.SagaID, Saga: c.Saga, Step: c.Step, Action: c.Action,
		Attempt: c.Attempt, Seq: c.Seq, Outcome: outcome, Reason: reason}
}

// Subject is the subject r is published on.
func (r *Reply) Subject() string { return ReplySubject(r.Saga, r.Step) }

// Validate returns an error wrapping [ErrBadRequest] or [ErrVersion] when r
// is not a well-formed reply.
func (r *Reply) Validate() error {
	if err := checkCorrelation("reply", r.V, r.SagaID, r.Saga, r.Step, r.Action, r.Attempt, r.Seq); err != nil {
		return err
	}
	if !r.Outcome.Valid() {
		return fmt.Errorf("reply outcome %q: %w", r.Outcome, ErrBadRequest)
	}
	if r.Agent != "" {
		if err := CheckToken("agent", r.Agent); err != nil {
			return err
		}
	}
	if r.Role != "" {
		if err := CheckToken("role", r.Role); err != nil {
			return err
		}
	}
	if r.Outcome == Failed && r.Reason == "" {
		return fmt.Errorf("a failed reply needs a reason: %w", ErrBadRequest)
	}
	if r.Until < 0 || (r.Until != 0 && r.Outcome != Working) {
		return fmt.Errorf("reply until %d: only a working reply declares a tick, and never a negative one: %w", r.Until, ErrBadRequest)
	}
	return nil
}

// StartRequest asks the coordinator to start a saga. It is sent as a request
// on [StartSubject] and answered with a [StartResponse] once the saga is
// durably stored. SagaID is optional: a client that sets it may retry the
// request safely, since a second start with the same id returns the saga
// already started.
type StartRequest struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id,omitempty"`
	// Rank, when positive, makes the saga part of a simulation run: its
	// commands are released in rounds, in rank order (see
	// docs/simulation.md). 0 starts it at once, outside any round.
	Rank int64 `json:"rank,omitempty"`
	// Tick, when ahead of the coordinator's clock, schedules the start:
	// the saga waits, pending, and starts when the clock reaches Tick,
	// with the other starts of that tick, in rank order. 0, or a tick
	// already reached, starts it now.
	Tick    int64   `json:"tick,omitempty"`
	Context Context `json:"context"`
}

// StartResponse answers a [StartRequest].
type StartResponse struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id,omitempty"`
	Status string `json:"status,omitempty"`
	// Existed is true when the start's saga_id named a saga there
	// already, active or finished: this start started nothing, and its
	// context and options were not used; Status is that saga's.
	Existed bool       `json:"existed,omitempty"`
	Error   *WireError `json:"error,omitempty"`
}

// MaxStarts bounds the starts of one [StartBatch].
const MaxStarts = 1024

// StartResultRoom is the room each start takes, at the least, in the
// answer to a [StartBatch]: a started saga's id and status, or a refusal
// whose message the coordinator cut for want of room.
const StartResultRoom = 96

// MaxStartsFor returns the most starts a [StartBatch] may hold under a
// server payload limit of limit bytes: [MaxStarts], or fewer when the
// answer could not give each [StartResultRoom] bytes.
func MaxStartsFor(limit int64) int {
	return int(max(0, min(MaxStarts, (limit-32)/StartResultRoom)))
}

// StartBatch asks the coordinator to start many sagas with one request, on
// [StartBatchSubject]. It is answered with a [StartBatchResponse] once
// every saga it started is durably stored. Each start is decided on its
// own, as a [StartRequest] alone would be: one that is refused spoils
// none of the others.
type StartBatch struct {
	V      int            `json:"v"`
	Starts []BatchedStart `json:"starts"`
}

// BatchedStart is one start of a [StartBatch]: a [StartRequest], with the
// saga type that a start alone names in its subject.
type BatchedStart struct {
	Saga    string  `json:"saga"`
	SagaID  string  `json:"saga_id,omitempty"`
	Rank    int64   `json:"rank,omitempty"`
	Tick    int64   `json:"tick,omitempty"`
	Context Context `json:"context"`
}

// StartBatchResponse answers a [StartBatch]: Results holds the answer to
// each start, in the order of the request, or Error says why none was
// looked at (a malformed request, too many starts, a coordinator at its
// limit of sagas in flight).
type StartBatchResponse struct {
	V       int             `json:"v"`
	Results []StartResponse `json:"results,omitempty"`
	Error   *WireError      `json:"error,omitempty"`
}

// MaxTickJump is the furthest one [Tick] may move the simulation clock
// forward: a tick more than MaxTickJump above the current one is refused
// with an error wrapping [ErrBadRequest] and changes nothing. It keeps a
// single request from moving the clock so far that no later tick can
// follow, and keeps every tick and deadline far from the int64 edge.
const MaxTickJump = 1_000_000

// AddTicks returns a+b, saturated at the int64 edges instead of wrapping:
// natsaga does every tick and timeout sum with it.
func AddTicks(a, b int64) int64 {
	s := a + b
	switch {
	case b > 0 && s < a:
		return math.MaxInt64
	case b < 0 && s > a:
		return math.MinInt64
	}
	return s
}

// CheckTick returns an error wrapping [ErrBadRequest] when next moves the
// clock at cur further than [MaxTickJump].
func CheckTick(cur, next int64) error {
	if next > AddTicks(cur, MaxTickJump) {
		return fmt.Errorf("tick %d is more than %d ticks ahead of the clock at %d: %w", next, MaxTickJump, cur, ErrBadRequest)
	}
	return nil
}

// Tick advances the simulation clock to Tick. Ticks are idempotent: a tick
// at or below the current one changes nothing. A tick may move the clock
// at most [MaxTickJump] ticks forward.
type Tick struct {
	V    int   `json:"v"`
	Tick int64 `json:"tick"`
}

// TickAck answers a [Tick] once the coordinator has applied it.
type TickAck struct {
	V    int   `json:"v"`
	Tick int64 `json:"tick"`
	// Expired lists the sagas this tick timed out, the first
	// [MaxListPage] of them, so that the answer always fits a message;
	// ExpiredCount counts them all.
	Expired      []string   `json:"expired,omitempty"`
	ExpiredCount int        `json:"expired_count,omitempty"`
	Summary      *Summary   `json:"summary,omitempty"`
	Error        *WireError `json:"error,omitempty"`
}

// Summary counts sagas by status.
type Summary struct {
	V          int   `json:"v"`
	Tick       int64 `json:"tick"`
	Registered int   `json:"registered"`
	Active     int   `json:"active"`
	Completed  int   `json:"completed"`
	RolledBack int   `json:"rolled_back"`
	TimedOut   int   `json:"timed_out"`
	Failed     int   `json:"failed"`
	// Awaiting counts active sagas whose outstanding command has had no
	// answer yet (neither a result nor "working"), a ranked saga's command
	// whether or not its round is released. See Due for the quiet rule.
	Awaiting int `json:"awaiting"`
	// Retrying counts active sagas waiting out the backoff before a retry.
	Retrying int `json:"retrying"`
	// Refused counts the records and replies refused since the
	// coordinator started because they did not come from the role owning
	// the step they name, or did not match the command in flight.
	Refused int64 `json:"refused,omitempty"`
	// Due counts the commands due at or before the current tick that have
	// no final answer: Awaiting and Retrying, and the working commands
	// whose declared tick (Reply.Until) has come. A simulation waits for it
	// to reach zero before the next tick.
	Due int `json:"due"`
	// Answered counts the answers (final or working) the coordinator
	// applied since its term began. A driver that waits for Due to reach
	// zero takes a change of it as progress: as a ranked saga's answer
	// comes, its next command is due, and Due stays the same.
	Answered int64 `json:"answered,omitempty"`
}

// StatusRequest asks for one saga's state and history.
type StatusRequest struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
}

// StatusResponse answers a [StatusRequest]. Saga is the saga's state as the
// engine stores it (see docs/protocol.md).
type StatusResponse struct {
	V     int             `json:"v"`
	Saga  json.RawMessage `json:"saga,omitempty"`
	Error *WireError      `json:"error,omitempty"`
}

// MaxListPage is the most sagas one [ListResponse] holds: a
// [ListRequest] with no Limit gets pages of this size, and one with a
// larger Limit is refused.
const MaxListPage = 1000

// ListRequest asks for a page of the sagas held by the coordinator with a
// given status ("" for every active saga), oldest first: at most Limit of
// them (0: [MaxListPage]), after the cursor After (empty: from the first).
// A client reads a long list by sending the Next of each answer as the
// After of the next request, until Next is empty.
type ListRequest struct {
	V      int    `json:"v"`
	Status string `json:"status,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	After  string `json:"after,omitempty"`
}

// ListResponse answers a [ListRequest]. Next, when not empty, is the
// cursor of the next page: more sagas follow. A page may hold fewer than
// the limit when the answer would not fit the server's payload limit.
// More, in the one page of a finished status, says that more sagas with
// that status are stored than the page holds (it has no cursor).
type ListResponse struct {
	V     int               `json:"v"`
	Sagas []json.RawMessage `json:"sagas"`
	Next  string            `json:"next,omitempty"`
	More  bool              `json:"more,omitempty"`
	Error *WireError        `json:"error,omitempty"`
}

// FormatListCursor returns the cursor of the saga id started at tick.
func FormatListCursor(tick int64, id string) string { return strconv.FormatInt(tick, 10) + ":" + id }

// ParseListCursor returns the tick and saga id of a cursor made by
// [FormatListCursor], or an error wrapping [ErrBadRequest].
func ParseListCursor(s string) (int64, string, error) {
	t, id, ok := strings.Cut(s, ":")
	tick, err := strconv.ParseInt(t, 10, 64)
	if !ok || err != nil {
		return 0, "", fmt.Errorf("list cursor %s: want <tick>:<saga_id>: %w", Quote(s), ErrBadRequest)
	}
	if err := CheckToken("list cursor saga_id", id); err != nil {
		return 0, "", err
	}
	return tick, id, nil
}

// RetryRequest asks the coordinator to retry the compensation of a saga
// that ended failed.
type RetryRequest struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
}

// RetryResponse answers a [RetryRequest] with the saga's new status.
type RetryResponse struct {
	V      int        `json:"v"`
	Status string     `json:"status,omitempty"`
	Error  *WireError `json:"error,omitempty"`
}

// AbortRequest asks the coordinator to roll back an active saga: an
// operator's way to end a saga that waits for an agent that will not
// answer. Reason, at most [MaxReason] bytes of UTF-8, is kept in the saga's
// error and history after "aborted: ". (Decoded from JSON, bytes that are
// not UTF-8 are replaced.)
type AbortRequest struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
	Reason string `json:"reason,omitempty"`
}

// Validate returns an error wrapping [ErrBadRequest] when r's saga id is
// not a token or its reason is too long.
func (r *AbortRequest) Validate() error {
	if err := CheckToken("saga_id", r.SagaID); err != nil {
		return err
	}
	if len(r.Reason) > MaxReason {
		return fmt.Errorf("reason of %d bytes, more than %d: %w", len(r.Reason), MaxReason, ErrBadRequest)
	}
	return nil
}

// AbortResponse answers an [AbortRequest] with the saga's new status,
// compensating, or rolled_back when it had nothing to compensate.
type AbortResponse struct {
	V      int    `json:"v"`
	Status string `json:"status,omitempty"`
	// Unchanged is set when the saga was compensating already (an abort,
	// a failed step or a timeout came first): the abort changed nothing.
	Unchanged bool       `json:"unchanged,omitempty"`
	Error     *WireError `json:"error,omitempty"`
}

// Event announces that a saga changed status. It is published on
// [EventSubject].
type Event struct {
	V      int    `json:"v"`
	SagaID string `json:"saga_id"`
	Saga   string `json:"saga"`
	Status string `json:"status"`
	Tick   int64  `json:"tick"`
	Step   string `json:"step,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// AgentStats is one agent process's answer on [AgentStatsSubject].
type AgentStats struct {
	V     int    `json:"v"`
	Role  string `json:"role"`
	Agent string `json:"agent"`
	PID   int    `json:"pid"`
	// Handled counts the commands this process received and answered.
	Handled int64 `json:"handled"`
	// Messages counts the command messages it took in: one per command
	// sent alone, one per [CommandBatch]. Fewer than the commands when
	// the coordinator sent it batches.
	Messages int64 `json:"messages,omitempty"`
	// Executed and Compensated count the actions decided and recorded
	// here for the first time: an execute answered ok or failed (a
	// business rejection is a recorded outcome too), a compensation that
	// undid its step or found nothing to undo. Duplicates and refusals
	// are counted apart; transient errors are not counted.
	Executed    int64 `json:"executed"`
	Compensated int64 `json:"compensated"`
	// Duplicates counts redelivered commands the barrier absorbed.
	Duplicates int64 `json:"duplicates"`
	// Refused counts executes refused because their compensation came first.
	Refused int64 `json:"refused"`
	// Redelivered counts commands JetStream delivered more than once.
	Redelivered int64 `json:"redelivered"`
	// Rejected counts malformed commands that were dropped.
	Rejected int64 `json:"rejected"`
	// Batches counts the batches a serial role's copy committed together,
	// and Batched the commands they held: Batched/Batches is the mean
	// batch size. Both are 0 for a role that is not serial.
	Batches int64 `json:"batches,omitempty"`
	Batched int64 `json:"batched,omitempty"`
	// RecordMessages counts the messages this process wrote to its role's
	// record log, and Records the barrier records they held:
	// Records/RecordMessages is the mean group commit.
	RecordMessages int64 `json:"record_messages,omitempty"`
	Records        int64 `json:"records,omitempty"`
	// Conflicts counts its store's optimistic retries: commands run again
	// because another copy wrote first, and messages of records the server
	// refused because another copy had written to the log first.
	Conflicts int64 `json:"conflicts,omitempty"`
}

// Error codes carried by [WireError].
const (
	CodeBadRequest = "bad_request"
	CodeNotFound   = "not_found"
	CodeConflict   = "conflict"
	CodeInternal   = "internal"
	// CodeBusy answers a start while the coordinator holds its limit of
	// sagas in flight, and a request that needs a read of the bucket while
	// it runs its limit of them or its term ends: nothing was done, and
	// the same request may be sent again after a backoff.
	CodeBusy = "busy"
	// CodeTooLarge answers a request whose answer would not fit the
	// server's payload limit: a saga whose state outgrew it.
	CodeTooLarge = "too_large"
)

// StatusCode returns the HTTP-like status code that stands for the error
// code c in NATS micro's Nats-Service-Error-Code header: 400, 404, 409,
// 413 (too_large), 503 (busy), or 500 for anything else.
func StatusCode(c string) string {
	switch c {
	case CodeBadRequest:
		return "400"
	case CodeNotFound:
		return "404"
	case CodeConflict:
		return "409"
	case CodeTooLarge:
		return "413"
	case CodeBusy:
		return "503"
	}
	return "500"
}

// WireError is an error as it travels in a response.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements error.
func (e *WireError) Error() string { return e.Code + ": " + e.Message }

// Decode parses data into v after checking its size and, when v has a "v"
// field, its version. Errors wrap [ErrTooLarge], [ErrBadRequest] or
// [ErrVersion].
func Decode(data []byte, v any) error {
	if len(data) > MaxPayload {
		return fmt.Errorf("%d bytes, limit %d: %w", len(data), MaxPayload, ErrTooLarge)
	}
	if err := CheckUTF8(data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %s", ErrBadRequest, JSONError(err))
	}
	if ver, ok := versionOf(v); ok && ver != Version {
		return fmt.Errorf("version %d, want %d: %w", ver, Version, ErrVersion)
	}
	return nil
}

// JSONError says what is wrong with a payload that encoding/json could not
// decode in the terms of the protocol, without Go's type names: a value of
// the wrong type names its field and the type it should have.
func JSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "the payload"
		}
		want := jsonKind(te.Type.Kind().String())
		if want == "an integer" {
			want += " (" + te.Type.Kind().String() + ")"
		}
		return fmt.Sprintf("%s: %s where %s is wanted", field, te.Value, want)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names the JSON of a Go kind.
func jsonKind(kind string) string {
	switch kind {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	}
	return "another type"
}

// CheckUTF8 returns an error wrapping [ErrBadRequest] when data is not
// valid UTF-8. Every payload of the protocol is JSON in UTF-8; encoding/json
// keeps the bytes of a raw value as they came, so a context value that is
// not UTF-8 would otherwise reach the agents, the bucket and every tool
// that reads them.
func CheckUTF8(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("not valid UTF-8: %w", ErrBadRequest)
	}
	return nil
}

func versionOf(v any) (int, bool) {
	switch m := v.(type) {
	case *Command:
		return m.V, true
	case *Reply:
		return m.V, true
	case *StartRequest:
		return m.V, true
	case *StartBatch:
		return m.V, true
	case *Tick:
		return m.V, true
	case *StatusRequest:
		return m.V, true
	case *ListRequest:
		return m.V, true
	case *RetryRequest:
		return m.V, true
	case *AbortRequest:
		return m.V, true
	case *RegisterRequest:
		return m.V, true
	}
	return 0, false
}

// MaxReason is the most bytes of an agent's reason a saga keeps. A reason
// is kept in the saga's history at every retry and in its error, so
// longer ones, each within the reply limit, could grow the saga's state
// past what one message holds, and the coordinator could then store
// nothing at all.
const MaxReason = 1 << 10

// ClipReason returns reason cut to at most [MaxReason] bytes, at a UTF-8
// boundary, saying how long it was. A byte that is not UTF-8 becomes
// U+FFFD first, as JSON carries it: three bytes on the wire for one, which
// a cut made before would have let past the bound.
func ClipReason(reason string) string {
	was := len(reason)
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) <= MaxReason {
		return reason
	}
	suffix := fmt.Sprintf("… (%d bytes)", was)
	cut := MaxReason - len(suffix)
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + suffix
}
