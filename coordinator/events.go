package coordinator

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// Events (wire version 2, messages.EventBatch). Every event of a commit is
// published alone on its live subject, natsaga.event.<saga>.<status>, as in
// version 1, for whoever listens now; no stream keeps those. The event
// stream keeps the commit's events as batches instead, one message per
// saga type and status on natsaga.eventlog.<saga>.<status>: a late reader
// reads far fewer messages, and the server stores one message for many
// sagas rather than one for each.

// publishEvents publishes events, a commit's, live and to the stream.
// Events are best effort: a failed publish is logged.
func (c *Coordinator) publishEvents(events []messages.Event) {
	if len(events) == 0 {
		return
	}
	// The events are encoded into one buffer, reused from commit to
	// commit; a slice of an earlier array stays valid when it grows.
	c.evbuf = c.evbuf[:0]
	encoded := make([][]byte, len(events))
	for i := range events {
		start := len(c.evbuf)
		c.evbuf = wirejson.AppendEvent(c.evbuf, &events[i])
		encoded[i] = c.evbuf[start:len(c.evbuf):len(c.evbuf)]
	}
	for i := range events {
		ev := &events[i]
		// Publish copies the data.
		if err := c.nc.Publish(messages.EventSubject(ev.Saga, ev.Status), encoded[i]); err != nil {
			c.log.Warn("event not published", "saga_id", ev.SagaID, "err", err)
		}
		c.logEvent(ev)
	}
	maxBytes := c.dataRoom()
	for _, g := range groupEvents(events, encoded, maxBytes) {
		items := make([][]byte, len(g))
		for i, j := range g {
			items[i] = encoded[j]
		}
		head := &events[g[0]]
		m := &nats.Msg{Subject: messages.EventLogSubject(head.Saga, head.Status),
			Data:   wirejson.AppendEventBatch(make([]byte, 0, eventBatchOverhead+len(items)*(len(items[0])+1)), items),
			Header: nats.Header{messages.BatchHeader: []string{strconv.Itoa(len(g))}}}
		if err := c.nc.PublishMsg(m); err != nil {
			c.log.Warn("events not kept", "subject", m.Subject, "events", len(g), "err", err)
		}
	}
}

// eventBatchOverhead is the bytes of an event batch's envelope.
const eventBatchOverhead = len(`{"v":2,"events":[]}`)

// groupEvents splits events, encoded as encoded, into the batches the
// event stream keeps, as indexes into events, in the order to publish
// them. A batch holds events of one saga type and status, at most
// messages.MaxBatch of them and maxBytes encoded (one event larger than
// that is a batch alone). Every saga's events keep their order: an event
// joins its subject's last batch only when no later batch holds an event
// of its saga.
func groupEvents(events []messages.Event, encoded [][]byte, maxBytes int) [][]int {
	type subject struct{ saga, status string }
	type open struct{ group, bytes int }
	var groups [][]int
	last := map[subject]open{} // each subject's last batch
	latest := map[string]int{} // the batch of each saga's last event
	for i := range events {
		ev := &events[i]
		key := subject{ev.Saga, ev.Status}
		size := len(encoded[i]) + 1
		o, ok := last[key]
		if l, seen := latest[ev.SagaID]; ok && (!seen || l <= o.group) &&
			len(groups[o.group]) < messages.MaxBatch && o.bytes+size <= maxBytes {
			groups[o.group] = append(groups[o.group], i)
			last[key] = open{o.group, o.bytes + size}
			latest[ev.SagaID] = o.group
			continue
		}
		groups = append(groups, []int{i})
		last[key] = open{len(groups) - 1, eventBatchOverhead + size}
		latest[ev.SagaID] = len(groups) - 1
	}
	return groups
}
