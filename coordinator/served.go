package coordinator

import "github.com/natsaga/natsaga/messages"

// A step's commands wait in the command stream until a consumer of its
// role takes them. A role's consumer takes the subjects of the steps its
// copies serve (the copy started last sets them), so a step that the
// definitions name and no copy serves, a misspelt step name in an agent or
// in a definitions file, or a role's copies of a build that predates the
// step, leaves its sagas waiting with nothing said. The coordinator, which
// reads the consumers every wireRefresh for their wire version, says so
// (when its NATS user may list them; otherwise it learns nothing of them,
// and says so only at DEBUG, as for the wire versions):
// once, at WARN, for each command subject of the latest definitions that
// the consumer of its role leaves out, and at INFO when a consumer takes
// it again. A role with no consumer yet has no agent yet, which drivers
// wait for and say; that is not warned about.

// stepSubject is a command subject of a step, and the role serving it.
type stepSubject struct {
	role, saga, step, subject string
}

// noteSteps records the command subjects of the latest version of every
// definition for checkServed. It runs on the loop, which owns the engine.
func (c *Coordinator) noteSteps() {
	var steps []stepSubject
	for _, d := range c.engine.Definitions() {
		for _, st := range d.Steps {
			for _, subj := range messages.StepCommandSubjects(d.Subject, st.Name) {
				steps = append(steps, stepSubject{role: st.Role, saga: d.Subject, step: st.Name, subject: subj})
			}
		}
	}
	c.steps.Store(&steps)
}

// checkServed logs each step subject that the consumer of its role leaves
// out of filters (the consumers' filter subjects, by name), and each one
// taken again, against unserved, the subjects warned about before.
func (c *Coordinator) checkServed(filters map[string][]string, unserved map[string]bool) {
	steps := c.steps.Load()
	if steps == nil {
		return
	}
	for _, s := range *steps {
		consumer := messages.CommandConsumer(s.role)
		fs, ok := filters[consumer]
		if !ok {
			continue
		}
		taken := len(fs) == 0 // a consumer with no filter takes every subject
		for _, f := range fs {
			taken = taken || messages.SubjectMatches(f, s.subject)
		}
		switch {
		case !taken && !unserved[s.subject]:
			unserved[s.subject] = true
			c.log.Warn("no agent of the role serves this step: its commands wait in the command stream until one does (is the step's name the same in the agents and the definitions?)",
				"role", s.role, "saga", s.saga, "step", s.step, "subject", s.subject, "consumer", consumer)
		case taken && unserved[s.subject]:
			delete(unserved, s.subject)
			c.log.Info("an agent of the role serves the step now", "role", s.role, "saga", s.saga, "step", s.step, "subject", s.subject)
		}
	}
}
