package messages

import (
	"fmt"
	"strconv"
	"strings"
)

// The NATS names natsaga uses. This file is the only place where a subject,
// stream, consumer or bucket name is spelled out; docs/protocol.md documents
// the same table.
//
//	saga.<saga>.<step>                      execute command        (stream NATSAGA_COMMANDS, known steps only)
//	saga.<saga>.<step>.compensate           compensate command     (stream NATSAGA_COMMANDS, known steps only)
//	natsaga.reply.<saga>.<step>             agent reply            (stream NATSAGA_REPLIES)
//	natsaga.start.<saga>                    start a saga           (request/reply)
//	natsaga.starts                          start many sagas       (request/reply)
//	natsaga.tick                            advance the sim clock  (request/reply; agents may listen)
//	natsaga.status / .summary / .list       queries                (request/reply)
//	natsaga.retry                           retry a failed saga's compensation (request/reply)
//	natsaga.register                        register saga definitions  (request/reply)
//	natsaga.event.<saga>.<status>           saga status changes    (publish)
//	natsaga.eventlog.<saga>.<status>        the same, in batches   (stream NATSAGA_EVENTS)
//	natsaga.agents.stats                    agent statistics       (micro endpoint "stats" of every agent)
//	$SRV.PING|INFO|STATS[.<service>[.<id>]] NATS micro discovery   (services natsaga-coordinator, natsaga-agent)
//	natsaga.sagas                           active sagas' states   (stream NATSAGA_SAGAS, many a message; the coordinator's alone)
//	natsaga.records.<role>                  participant barrier    (stream NATSAGA_RECORDS_<ROLE>, many records a message; the coordinator reads it)
//	natsaga.state.<role>.branch.<id>.<step> participant barrier of agents before the log (stream NATSAGA_STATE_<ROLE>; read, never written)
//	natsaga.state.<role>.data.<key>         participant state      (stream NATSAGA_STATE_<ROLE>)
const (
	// CommandStream holds every execute and compensate command until the
	// agent that handled it acknowledges it (work-queue retention).
	CommandStream = "NATSAGA_COMMANDS"
	// ReplyStream holds every agent reply until the coordinator has acted
	// on it (work-queue retention).
	ReplyStream = "NATSAGA_REPLIES"
	// RecordConsumer is the durable consumer through which the coordinator
	// reads the barrier records of each role, in the role's
	// [RecordStream].
	RecordConsumer = "coordinator"
	// ReplyConsumer is the durable consumer through which the coordinator
	// reads ReplyStream.
	ReplyConsumer = "coordinator"
	// SagaBucket is the key-value bucket holding the sagas that ended,
	// one entry a saga, the definitions, the clock and the lease.
	SagaBucket = "natsaga_sagas"
	// SagaBucketStream is the stream that holds [SagaBucket], as JetStream
	// names a bucket's: read directly, a value comes with its headers.
	SagaBucketStream = "KV_" + SagaBucket
	// SagaLogStream holds the coordinator's log of the active sagas'
	// states, many a message, on [SagaLogSubject].
	SagaLogStream = "NATSAGA_SAGAS"
	// SagaLogSubject is the one subject of [SagaLogStream].
	SagaLogSubject = "natsaga.sagas"
	// EventStream keeps saga status events for late readers, as
	// [EventBatch] messages on [EventLogSubjects].
	EventStream = "NATSAGA_EVENTS"

	// TickSubject carries [Tick] requests from the simulation clock.
	TickSubject = "natsaga.tick"
	// StatusSubject answers a [StatusRequest] with a [StatusResponse].
	StatusSubject = "natsaga.status"
	// SummarySubject answers any request with a [Summary].
	SummarySubject = "natsaga.summary"
	// ListSubject answers a [ListRequest] with a [ListResponse].
	ListSubject = "natsaga.list"
	// RetrySubject answers a [RetryRequest] with a [RetryResponse].
	RetrySubject = "natsaga.retry"
	// AbortSubject answers an [AbortRequest] with an [AbortResponse].
	AbortSubject = "natsaga.abort"
	// RegisterSubject answers a [RegisterRequest] with a [RegisterResponse].
	RegisterSubject = "natsaga.register"
	// AgentStatsSubject is answered by every running agent with its
	// [AgentStats]: the "stats" endpoint of [AgentService], served with no
	// queue group, so that every agent answers.
	AgentStatsSubject = "natsaga.agents.stats"

	// CoordinatorService is the NATS micro service name under which the
	// active coordinator serves its request API (start, tick, status,
	// summary, list, retry, abort, register), so that "nats micro info natsaga-coordinator"
	// finds it.
	CoordinatorService = "natsaga-coordinator"
	// AgentService is the NATS micro service name of every agent; its
	// metadata names the agent's role and copy.
	AgentService = "natsaga-agent"
	// ServiceVersion is the version both services announce. Its major
	// number is the newest wire version natsaga speaks (3: the agents'
	// barrier records in a log, [RecordStream]); its minor number counts
	// the endpoints added since (1: the coordinator's abort).
	ServiceVersion = "3.1.0"

	// CompensateToken is the last token of a compensation's subject
	// (saga.<saga>.<step>.compensate): no step may have it as its name.
	CompensateToken = "compensate"

	commandPrefix  = "saga."
	compensateTok  = CompensateToken
	replyPrefix    = "natsaga.reply."
	startPrefix    = "natsaga.start."
	eventPrefix    = "natsaga.event."
	eventLogPrefix = "natsaga.eventlog."
	statePrefix    = "natsaga.state."
	recordPrefix   = "natsaga.records."
)

// CommandSubjects matches every command subject. [CommandStream] takes only
// the subjects of the steps the coordinator knows ([StepCommandSubjects]),
// so that a command nobody serves is refused at publish rather than kept.
var CommandSubjects = []string{"saga.*.*", "saga.*.*." + compensateTok}

// StepCommandSubjects are the execute and compensate subjects of step of
// saga.
func StepCommandSubjects(saga, step string) []string {
	return []string{ExecuteSubject(saga, step), CompensateSubject(saga, step)}
}

// ReplySubjects are the subjects of [ReplyStream].
var ReplySubjects = []string{replyPrefix + ">"}

// EventSubjects matches every [EventSubject]: the live events.
var EventSubjects = []string{eventPrefix + ">"}

// EventLogSubjects are the subjects of [EventStream].
var EventLogSubjects = []string{eventLogPrefix + ">"}

// ExecuteSubject is the subject of the execute command for step of saga,
// for example "saga.subsidy.government_evaluates".
func ExecuteSubject(saga, step string) string { return commandPrefix + saga + "." + step }

// CompensateSubject is the subject of the compensate command for step of
// saga, for example "saga.subsidy.government_evaluates.compensate".
func CompensateSubject(saga, step string) string {
	return commandPrefix + saga + "." + step + "." + compensateTok
}

// CommandSubject is the subject a command for step of saga with action
// travels on.
func CommandSubject(saga, step string, action Action) string {
	if action == Compensate {
		return CompensateSubject(saga, step)
	}
	return ExecuteSubject(saga, step)
}

// IsCommandSubject reports whether subject is CommandSubject(saga, step,
// action), without building it.
func IsCommandSubject(subject, saga, step string, action Action) bool {
	rest, ok := strings.CutPrefix(subject, commandPrefix)
	if !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, saga); !ok || len(rest) == 0 || rest[0] != '.' {
		return false
	}
	rest = rest[1:]
	if action == Compensate {
		var ok bool
		if rest, ok = strings.CutSuffix(rest, "."+compensateTok); !ok {
			return false
		}
	}
	return rest == step
}

// ReplySubject is the subject on which an agent replies to a command for
// step of saga.
func ReplySubject(saga, step string) string { return replyPrefix + saga + "." + step }

// StartSubject is the subject on which a [StartRequest] for saga is sent.
func StartSubject(saga string) string { return startPrefix + saga }

// StartSubjects matches the start subject of every saga.
const StartSubjects = startPrefix + "*"

// StartBatchSubject is the subject on which a [StartBatch] is sent.
const StartBatchSubject = "natsaga.starts"

// ParseStartSubject returns the saga named by subject, a [StartSubject],
// and false when subject is not one.
func ParseStartSubject(subject string) (saga string, ok bool) {
	saga, ok = strings.CutPrefix(subject, startPrefix)
	return saga, ok && ValidToken(saga)
}

// EventSubject is the subject of an [Event] announcing that a saga of type
// saga reached status.
func EventSubject(saga, status string) string { return eventPrefix + saga + "." + status }

// EventLogSubject is the subject on which [EventStream] keeps the
// [EventBatch] messages of the events of [EventSubject] (saga, status).
func EventLogSubject(saga, status string) string { return eventLogPrefix + saga + "." + status }

// StateStream is the stream that holds the durable state and the barrier of
// the participants playing role.
func StateStream(role string) string { return "NATSAGA_STATE_" + strings.ToUpper(role) }

// StateSubjects are the subjects of StateStream(role).
func StateSubjects(role string) []string { return []string{statePrefix + role + ".>"} }

// RecordStream is the stream of role's barrier records: a log whose
// messages each hold the records of many branches, on [RecordSubject].
func RecordStream(role string) string { return "NATSAGA_RECORDS_" + strings.ToUpper(role) }

// RecordSubject is the one subject of [RecordStream] (role).
func RecordSubject(role string) string { return recordPrefix + role }

// ParseRecordSubject returns the role of a [RecordSubject], and false when
// subject is not one.
func ParseRecordSubject(subject string) (role string, ok bool) {
	role, ok = strings.CutPrefix(subject, recordPrefix)
	return role, ok && role != "" && !strings.Contains(role, ".")
}

// RecordKey is the key of the barrier record of one step of one saga in
// its role's [RecordStream].
func RecordKey(sagaID, step string) string { return sagaID + "/" + step }

// ParseRecordKey returns the saga id and step of a [RecordKey], and false
// when key is not one.
func ParseRecordKey(key string) (sagaID, step string, ok bool) {
	sagaID, step, ok = strings.Cut(key, "/")
	return sagaID, step, ok && sagaID != "" && step != "" && !strings.Contains(step, "/")
}

// BranchSubject is the subject of role's barrier record for one step of one
// saga, as agents before the [RecordStream] kept it.
func BranchSubject(role, sagaID, step string) string {
	return statePrefix + role + ".branch." + sagaID + "." + step
}

// BranchSubjects matches every barrier record of role that agents before
// the [RecordStream] kept.
func BranchSubjects(role string) string { return statePrefix + role + ".branch.>" }

// DataSubject is the subject of role's durable state value named key.
func DataSubject(role, key string) string { return statePrefix + role + ".data." + key }

// The keys of [SagaBucket] besides the sagas': the simulation clock and the
// active coordinator's lease.
const (
	ClockKey = "meta.clock"
	LeaseKey = "meta.leader"
)

// SagaKey is the key in [SagaBucket] of the saga with id.
func SagaKey(id string) string { return SagaKeyPrefix + id }

// SagaKeyPrefix starts every [SagaKey].
const SagaKeyPrefix = "s."

// Headers of a saga's entry in [SagaBucket]: its status, and the tick of
// its last transition. A reader that needs no more than these (the
// coordinator counting the finished sagas as it recovers) reads the
// bucket's headers only. An entry written before they were may lack
// them; its value says the same.
const (
	SagaStatusHeader = "Natsaga-Status"
	SagaTickHeader   = "Natsaga-Tick"
)

// DefinitionKey is the key in [SagaBucket] of version of the saga
// definition named name: a definitions file holding that one definition.
func DefinitionKey(name string, version int64) string {
	return DefinitionKeyPrefix + name + "." + strconv.FormatInt(version, 10)
}

// DefinitionKeyPrefix starts every [DefinitionKey].
const DefinitionKeyPrefix = "d."

// DirectGetSubject is the JetStream API subject that answers with the last
// message on subject in stream (a direct get; the stream allows them).
func DirectGetSubject(stream, subject string) string {
	return "$JS.API.DIRECT.GET." + stream + "." + subject
}

// BucketSubject is the subject on which a write of key in [SagaBucket]
// travels (and is stored).
func BucketSubject(key string) string { return "$KV." + SagaBucket + "." + key }

// CommandConsumer is the name of the durable consumer through which the
// agents playing role pull their commands from [CommandStream]. Every copy
// of the agent shares it, so each command goes to exactly one copy.
func CommandConsumer(role string) string { return "agent-" + role }

// SerialGroup is the priority group of a serial role's consumer: the
// consumer pins one copy of the role at a time (the pinned-client policy),
// and every copy pulls naming this group.
const SerialGroup = "natsaga"

// MaxTokenLen is the longest identifier natsaga accepts, in bytes: a saga
// id, saga type, step name, role or agent name. See [ValidToken].
const MaxTokenLen = 64

// TokenRule is the identifier grammar, as an error message states it.
const TokenRule = "1 to 64 characters, each A-Z, a-z, 0-9, _ or -"

// ValidToken reports whether s follows natsaga's identifier grammar
// ([TokenRule]): 1 to [MaxTokenLen] bytes, each an ASCII letter, a digit,
// '_' or '-'. Every identifier that becomes part of a subject or a key
// follows it (saga ids, saga types, step names, roles, agent names), so
// that each is one valid NATS subject token and part of a valid key-value
// key, and no subject built from them exceeds what a server accepts.
func ValidToken(s string) bool {
	if s == "" || len(s) > MaxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckToken returns an error wrapping [ErrBadRequest] that names what and
// the rule when s breaks the identifier grammar (see [ValidToken]). The
// value is quoted cut to 80 bytes, so the error stays small whatever s is.
func CheckToken(what, s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("%s %s breaks the identifier rule (%s): %w", what, Quote(s), TokenRule, ErrBadRequest)
	}
	return nil
}

// storedPrefixes are the subjects a natsaga process writes to or reads
// from: JetStream's API, streams and buckets, the system's, micro's, and
// natsaga's own.
var storedPrefixes = []string{"$JS.", "$KV.", "$O.", "$SYS.", "$SRV.", "natsaga.", "saga."}

// CheckReply returns an error wrapping [ErrBadRequest] when reply, the
// subject a request asks its answer on, is one natsaga stores or reads
// (a stream's, a bucket's, natsaga's own, JetStream's or micro's API): a
// service answering there would write its answer into its own storage
// (a coordinator's lease, a role's ledger) with its own permissions. Such
// a request gets no answer. An empty reply is no error: nothing is sent.
func CheckReply(reply string) error {
	for _, p := range storedPrefixes {
		if strings.HasPrefix(reply, p) {
			return fmt.Errorf("reply subject %s is inside natsaga's own subjects (%s): %w", Quote(reply), strings.Join(storedPrefixes, " "), ErrBadRequest)
		}
	}
	return nil
}

// MaxKeyTokens bounds the identifiers of a state key.
const MaxKeyTokens = 8

// KeyRule is the rule of a state key, for error messages.
const KeyRule = "1 to 8 identifiers of " + TokenRule + ", joined by dots"

// ValidKey reports whether s is a valid key of an agent's state: one to
// [MaxKeyTokens] identifiers ([ValidToken]) joined by dots, such as
// "stock" or "patient.p-17". A key is part of a subject, so a space, a
// wildcard or an empty token would make it none, or many.
func ValidKey(s string) bool {
	for i := 0; i < MaxKeyTokens; i++ {
		tok, rest, more := strings.Cut(s, ".")
		if !ValidToken(tok) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
	return false
}

// CheckKey returns an error wrapping [ErrBadRequest] that quotes key and
// the rule when key breaks it (see [ValidKey]).
func CheckKey(key string) error {
	if !ValidKey(key) {
		return fmt.Errorf("state key %s breaks the key rule (%s): %w", Quote(key), KeyRule, ErrBadRequest)
	}
	return nil
}

// Clip returns s for a log attribute, which the logger quotes and escapes
// itself: s cut to 80 bytes, with the length of the whole when it is
// longer.
func Clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:max], len(s))
}

// Quote returns s quoted for an error, cut to 80 bytes with the length of
// the whole when it is longer.
func Quote(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:max]), len(s))
}

// SubjectMatches reports whether subject, a literal subject, is one that
// filter takes: filter's tokens match subject's one for one, where "*"
// matches any one token and a last ">" matches one or more. It is how a
// consumer's filter subject selects the messages of a stream.
func SubjectMatches(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">" && !fmore:
			return st != ""
		case ft != "*" && ft != st:
			return false
		case !fmore || !smore:
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
