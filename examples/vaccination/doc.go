// Package vaccination is a second natsaga model, built only on natsaga's
// public packages and a definitions file: a vaccination campaign in which
// patients book a dose from one clinic whose vaccine stock is shared by
// every saga.
//
// Two sagas run it (sagas.json):
//
//	vaccinate: patient_books → depot_reserves_dose → clinic_vaccinates
//	restock:   clinic_orders → depot_receives
//
// The depot's stock is the shared resource: one state key that every
// vaccination and every restock touches, so the depot is a serial role. A
// patient with a fever is turned away by the clinic, and the compensation
// that matters follows: the depot's return_dose puts the reserved dose
// back in the stock, for a later patient.
//
// The agents are handlers over agent.Tx ([Steps]); [Simulate] is the
// driver, on package client; [Run] runs everything in one process on an
// embedded nats-server, as cmd/vaxsim does. docs/own-model.md walks
// through it.
package vaccination
