// Package client is natsaga's Go client: what a simulation driver, an
// operator tool or any Go program uses to talk to a running coordinator.
//
// A [Client] starts sagas (one, or many in one call, with the ids, ranks
// and ticks of a simulation run), advances the simulation clock with the
// quiet rule of docs/simulation.md built in ([Client.Advance]), asks for a
// saga's status, the summary, a list of sagas, retries a failed saga's
// compensation, registers saga definitions, watches saga events, reads
// the stored sagas in one pass ([Client.ScanStored]) and writes their
// outcome log, gathers the agents' statistics, and lists the running
// services.
// [Client.StatusJSON] and [Client.ListJSON] return the sagas' states as the
// coordinator sent them, for a tool that passes them on.
//
// Every network call takes a context first. A request that nobody listens
// to yet (a coordinator restarting) is sent again. One that is not
// answered in time is sent again, identical, when that is safe: not a
// start without an id, nor a retry, which may have taken effect (the
// error then says so). An
// error the coordinator answers with is an [*Error] whose code can be
// tested with errors.Is against [ErrNotFound], [ErrBadRequest],
// [ErrConflict], [ErrBusy], [ErrTooLarge] and [ErrInternal]. A start the
// coordinator answers "busy" is sent again after a backoff until its
// context ends. A Client is safe for concurrent use.
package client
