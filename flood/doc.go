// Package flood is natsaga's first domain: the sagas of a flood-adaptation
// agent-based model and the agents that run their steps.
//
// Three sagas, three steps and three compensations each:
//
//	subsidy:   household_applies → government_evaluates → budget_deducted
//	insurance: household_files   → insurer_evaluates    → payout_issued
//	elevation: household_requests → government_approves → contractor_elevates
//
// Four roles run them, each as its own agent process: households, the
// government (which holds the public budget), the insurer (which holds the
// insurance fund) and the contractor. The budget and the fund are durable
// state in the role's store, shared by every concurrent saga and by every
// copy of the agent, never negative, in integer cents.
//
// The package knows no transport: its handlers are [agent.Handler] values
// over an [agent.Tx], so its rules run in tests on [agent.Memory], and on
// JetStream through package participant, which cmd/ wires.
//
// The context keys each saga reads and writes are listed in
// docs/protocol.md.
package flood
