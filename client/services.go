package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/natsaga/natsaga/messages"
)

// Services asks the natsaga services for their NATS micro INFO (the
// coordinators, active and standing by, whose metadata "state" says which,
// then every agent, whose metadata "role" and "copy" name it; "metrics" is
// the address a program serves its metrics on, when it does) and returns
// the answers that come within wait for each kind: an empty, not nil, slice
// when none answers. It returns an error when the request cannot be sent,
// or ctx's error when ctx ends first.
func (c *Client) Services(ctx context.Context, wait time.Duration) ([]micro.Info, error) {
	infos := []micro.Info{}
	for _, name := range []string{messages.CoordinatorService, messages.AgentService} {
		got, err := c.serviceInfos(ctx, name, wait)
		if err != nil {
			return infos, err
		}
		infos = append(infos, got...)
	}
	return infos, nil
}

// serviceInfos gathers the INFO answers of the micro service name for
// wait. Every copy answers the one request, so its answers are read until
// the wait is over rather than until the first.
func (c *Client) serviceInfos(ctx context.Context, name string, wait time.Duration) ([]micro.Info, error) {
	subject, err := micro.ControlSubject(micro.InfoVerb, name, "")
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var infos []micro.Info
	for {
		m, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return infos, fmt.Errorf("services: %w", ctx.Err())
			}
			return infos, nil // wait has passed
		}
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil || info.Name != name {
			c.log.Warn("service info answer skipped", "subject", subject, "err", err)
			continue
		}
		infos = append(infos, info)
	}
}
