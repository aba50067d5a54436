package messages

// Command batches (wire version 2). When the commands of one step of many
// sagas are due at once, the coordinator may send them as one message on
// the step's command subject: a [CommandBatch], marked by the header
// [BatchHeader]. It does so only to a role whose consumer declares, in its
// metadata, that it reads batches ([WireMetadata]); every other role gets
// one message per command, as in version 1. Every version-1 payload is
// unchanged in version 2.
const (
	// BatchVersion is the wire version that added command batches, and
	// the "v" of a [CommandBatch].
	BatchVersion = 2
	// BatchHeader marks a message of the command stream that holds a
	// [CommandBatch]; its value is the number of commands in it.
	BatchHeader = "Natsaga-Batch"
	// WireMetadata is the key, in the metadata of a role's consumer, of
	// the newest wire version its agents speak: "2" when they read command
	// batches. A consumer without it speaks version 1.
	WireMetadata = "natsaga_wire"
	// MaxBatch bounds the commands of one [CommandBatch]. A batch is also
	// bounded by [MaxPayload], as every payload.
	MaxBatch = 256
)

// CommandBatch is the payload of a command batch: commands of one step,
// each on the message's subject, in the order the coordinator released
// them. Each is a whole [Command], with "v":1, checked on its own: one
// malformed command does not spoil its neighbours.
type CommandBatch struct {
	V        int       `json:"v"`
	Commands []Command `json:"commands"`
}

// EventBatch is how [EventStream] keeps events (wire version 2). Live
// readers get every [Event] alone, as in version 1, on [EventSubject]. The
// stream keeps, on [EventLogSubject] of the same saga and status, one
// EventBatch per commit of the coordinator: the events of that saga type
// and status in the order they happened, each a whole [Event] with "v":1.
// A message of the stream carries the header [BatchHeader] with the number
// of its events.
type EventBatch struct {
	V      int     `json:"v"`
	Events []Event `json:"events"`
}
