package saga

import (
	"errors"
	"fmt"
	"time"

	"github.com/natsaga/natsaga/messages"
)

// DefaultTimeoutTicks is a step's timeout when its definition leaves it 0.
const DefaultTimeoutTicks = 1

// Step is one step of a saga definition.
type Step struct {
	// Name is the step's subject token, for example "government_evaluates".
	Name string
	// Role is the agent role that runs the step and its compensation. The
	// coordinator reads the answers that agents give through their
	// barrier records from this role's record stream
	// (NATSAGA_RECORDS_<ROLE>), so the agents serving the step must run as
	// this role.
	Role string
	// Compensation names the undo action, for documentation and history,
	// for example "undo_approval".
	Compensation string
	// TimeoutTicks is how many ticks the step may take: a step dispatched
	// at tick d and not answered by tick d+TimeoutTicks times out at the
	// next tick. 0 means DefaultTimeoutTicks.
	TimeoutTicks int64
	// Retry bounds the retries of a transient error. The zero value means
	// DefaultRetry.
	Retry RetryPolicy
}

// RetryPolicy bounds the retries of a command and spaces them out with
// exponential backoff in wall-clock time.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included.
	MaxAttempts int
	// Backoff is the delay before the second attempt; it doubles for each
	// later one, up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// MaxRetryBackoff bounds a retry policy's Backoff and MaxBackoff: a saga
// waits no longer than that to send a command again, so that a policy
// written in the wrong unit ("1000000h") does not hold a saga, and a
// simulation's quiet tick, for ever.
const MaxRetryBackoff = time.Hour

// check returns an error when p's attempts are negative, or a backoff is
// negative or over MaxRetryBackoff.
func (p RetryPolicy) check() error {
	if p.MaxAttempts < 0 {
		return fmt.Errorf("max_attempts %d: negative", p.MaxAttempts)
	}
	for _, b := range []struct {
		field string
		d     time.Duration
	}{{"backoff", p.Backoff}, {"max_backoff", p.MaxBackoff}} {
		switch {
		case b.d < 0:
			return fmt.Errorf("%s %s: negative", b.field, b.d)
		case b.d > MaxRetryBackoff:
			return fmt.Errorf("%s %s: more than %s", b.field, b.d, MaxRetryBackoff)
		}
	}
	return nil
}

// DefaultRetry is the policy for transient errors of a step.
var DefaultRetry = RetryPolicy{MaxAttempts: 3, Backoff: 20 * time.Millisecond, MaxBackoff: time.Second}

// DefaultCompensationRetry is the policy for compensations.
var DefaultCompensationRetry = RetryPolicy{MaxAttempts: 8, Backoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second}

func (p RetryPolicy) orDefault(d RetryPolicy) RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = d.MaxAttempts
	}
	if p.Backoff == 0 {
		p.Backoff = d.Backoff
	}
	if p.MaxBackoff == 0 {
		p.MaxBackoff = d.MaxBackoff
	}
	return p
}

// delay is the backoff before attempt+1, after attempt failed.
func (p RetryPolicy) delay(attempt int) time.Duration {
	d := p.Backoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// Definition describes a kind of saga.
type Definition struct {
	// Name identifies the definition, for example "subsidy_application".
	Name string
	// Subject is the token used on the wire, for example "subsidy".
	Subject     string
	Description string
	// Version numbers the definition's revisions, from 1; 0 means 1. A
	// saga runs to its end by the version it started with (see
	// [Engine.Update]).
	Version int64
	Steps   []Step
	// TimeoutTicks bounds the whole saga: one still executing more than
	// TimeoutTicks after it started times out. 0 means the sum of the
	// steps' timeouts (the prototype's rule).
	TimeoutTicks int64
	// CompensationRetry bounds the attempts of each compensation before
	// the saga is marked failed. The zero value means
	// DefaultCompensationRetry.
	CompensationRetry RetryPolicy
}

// Validate returns an error wrapping [ErrInvalidDefinition] when d cannot be
// registered: a missing name, a subject or step name that is not a subject
// token, no steps, a duplicate step or a negative timeout.
func (d *Definition) Validate() error {
	var errs []error
	if d.Name == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if !messages.ValidToken(d.Subject) {
		errs = append(errs, fmt.Errorf("subject %q is not a subject token", d.Subject))
	}
	if len(d.Steps) == 0 {
		errs = append(errs, errors.New("no steps"))
	}
	if d.TimeoutTicks < 0 {
		errs = append(errs, errors.New("negative timeout"))
	}
	if d.Version < 0 {
		errs = append(errs, errors.New("negative version"))
	}
	seen := map[string]bool{}
	for i, s := range d.Steps {
		switch {
		case !messages.ValidToken(s.Name) || s.Name == messages.CompensateToken:
			errs = append(errs, fmt.Errorf("step %d: name %q is not a subject token", i, s.Name))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("step %d: duplicate name %q", i, s.Name))
		}
		seen[s.Name] = true
		if !messages.ValidToken(s.Role) {
			errs = append(errs, fmt.Errorf("step %q: role %q is not a subject token", s.Name, s.Role))
		}
		if s.TimeoutTicks < 0 || s.Retry.MaxAttempts < 0 {
			errs = append(errs, fmt.Errorf("step %q: negative timeout or attempts", s.Name))
		}
		if err := s.Retry.check(); err != nil {
			errs = append(errs, fmt.Errorf("step %q: retry: %w", s.Name, err))
		}
	}
	if err := d.CompensationRetry.check(); err != nil {
		errs = append(errs, fmt.Errorf("compensation retry: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("definition %q: %w: %w", d.Name, ErrInvalidDefinition, err)
	}
	return nil
}

// normalized returns a copy of d with every default filled in.
func (d Definition) normalized() *Definition {
	d.Steps = append([]Step(nil), d.Steps...)
	var sum int64
	for i := range d.Steps {
		s := &d.Steps[i]
		if s.TimeoutTicks == 0 {
			s.TimeoutTicks = DefaultTimeoutTicks
		}
		s.Retry = s.Retry.orDefault(DefaultRetry)
		sum = messages.AddTicks(sum, s.TimeoutTicks)
	}
	if d.TimeoutTicks == 0 {
		d.TimeoutTicks = sum
	}
	if d.Version == 0 {
		d.Version = 1
	}
	d.CompensationRetry = d.CompensationRetry.orDefault(DefaultCompensationRetry)
	return &d
}

// Step returns the step of d named name, and false when d has none.
func (d *Definition) Step(name string) (*Step, bool) {
	for i := range d.Steps {
		if d.Steps[i].Name == name {
			return &d.Steps[i], true
		}
	}
	return nil, false
}

// Roles returns the distinct roles of d's steps, in step order.
func (d *Definition) Roles() []string {
	var roles []string
	seen := map[string]bool{}
	for _, s := range d.Steps {
		if !seen[s.Role] {
			seen[s.Role] = true
			roles = append(roles, s.Role)
		}
	}
	return roles
}
