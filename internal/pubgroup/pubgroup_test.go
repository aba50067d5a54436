package pubgroup_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/pubgroup"
	"github.com/natsaga/natsaga/internal/testenv"
)

type held struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	p      *pubgroup.Publisher
	start  func()
	groups chan int
}

// newHeld returns a stream on t.> and a Publisher that sends nothing until
// start is called.
func newHeld(t *testing.T) held {
	t.Helper()
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	require.NoError(t, err)
	h := held{js: js, st: st, groups: make(chan int, pubgroup.MaxGroup)}
	h.p, h.start, err = pubgroup.NewHeld(nc, 5*time.Second, func(n int) { h.groups <- n })
	require.NoError(t, err)
	return h
}

type result struct {
	ack *jetstream.PubAck
	err error
}

// queue publishes on each subject at once, expecting the last sequence
// expect[i], and returns the answers once the publisher is started.
func (h held) queue(t *testing.T, subjects []string, expect []uint64) []result {
	t.Helper()
	results := make([]result, len(subjects))
	var wg sync.WaitGroup
	for i, subj := range subjects {
		wg.Go(func() {
			ack, err := h.p.Publish(context.Background(), subj, []byte("from "+subj),
				jetstream.WithExpectLastSequencePerSubject(expect[i]))
			results[i] = result{ack, err}
		})
	}
	require.Eventually(t, func() bool { return h.p.Queued() == len(subjects) }, 5*time.Second, time.Millisecond)
	h.start()
	wg.Wait()
	return results
}

// The publishes queued while the publisher is busy go out as one group,
// and each is answered with its own acknowledgement or its own error: a
// stale expectation fails alone, and its neighbours are stored.
func TestEachPublishAnsweredOnItsOwn(t *testing.T) {
	h := newHeld(t)
	t.Cleanup(h.p.Close)
	ctx := context.Background()
	for i := range 3 {
		_, err := h.js.Publish(ctx, fmt.Sprintf("t.taken.%d", i), []byte("before"))
		require.NoError(t, err)
	}
	var subjects []string
	var expect []uint64
	for i := range 20 {
		if i%7 == 3 { // 3, 10 and 17: a subject that has a message
			subjects = append(subjects, fmt.Sprintf("t.taken.%d", i/7))
		} else {
			subjects = append(subjects, fmt.Sprintf("t.new.%d", i))
		}
		expect = append(expect, 0)
	}

	results := h.queue(t, subjects, expect)
	require.Equal(t, 20, <-h.groups, "one group")
	seqs := map[uint64]bool{}
	for i, r := range results {
		if i%7 == 3 {
			require.True(t, jserr.Conflict(r.err), "%s: %v", subjects[i], r.err)
			m, err := h.st.GetLastMsgForSubject(ctx, subjects[i])
			require.NoError(t, err)
			require.Equal(t, "before", string(m.Data))
			continue
		}
		require.NoError(t, r.err, subjects[i])
		m, err := h.st.GetMsg(ctx, r.ack.Sequence)
		require.NoError(t, err)
		require.Equal(t, subjects[i], m.Subject, "the acknowledgement is its own message's")
		require.Equal(t, "from "+subjects[i], string(m.Data))
		seqs[r.ack.Sequence] = true
	}
	require.Len(t, seqs, 17)
}

// Publishes left waiting when the publisher closes are answered with
// ErrClosed, and so is any publish after.
func TestClosedAnswersWhatWaits(t *testing.T) {
	h := newHeld(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = h.p.Publish(context.Background(), fmt.Sprintf("t.%d", i), nil)
		})
	}
	require.Eventually(t, func() bool { return h.p.Queued() == 3 }, 5*time.Second, time.Millisecond)
	h.p.CloseThenStart(h.start)
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, pubgroup.ErrClosed)
	}
	_, err := h.p.Publish(context.Background(), "t.late", nil)
	require.ErrorIs(t, err, pubgroup.ErrClosed)
	h.p.Close() // twice is fine
	info, err := h.st.Info(context.Background())
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nothing was sent")
}

// A publish whose context ends before its answer returns the context's
// error; the publisher goes on with the others.
func TestContextEnds(t *testing.T) {
	h := newHeld(t)
	t.Cleanup(h.p.Close)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := h.p.Publish(ctx, "t.gone", nil)
		gone <- err
	}()
	require.Eventually(t, func() bool { return h.p.Queued() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-gone, context.Canceled)
	h.start()
	ack, err := h.p.Publish(context.Background(), "t.next", nil)
	require.NoError(t, err)
	m, err := h.st.GetMsg(context.Background(), ack.Sequence)
	require.NoError(t, err)
	require.Equal(t, "t.next", m.Subject)
}
