package vaccination

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// SagasFile is the model's definitions file, sagas.json.
//
//go:embed sagas.json
var SagasFile []byte

// Definitions returns the model's sagas, read from [SagasFile].
func Definitions() ([]saga.Definition, error) { return saga.ParseFile(SagasFile) }

// The roles and the saga types.
const (
	Patient   = "patient"
	Depot     = "depot"
	Clinic    = "clinic"
	Vaccinate = "vaccinate"
	Restock   = "restock"
)

// Context keys.
const (
	KeyPatient = "patient_id" // string: who is vaccinated
	KeyFever   = "fever"      // bool: the clinic turns the patient away
	KeyDoses   = "doses"      // int: doses a restock brings
)

// StockKey is the depot's state key: the shared stock.
const StockKey = "stock"

// Stock is the depot's vaccine stock. Doses is never negative, and
// Doses = Initial + Received - Dispensed at every commit. Once no saga is
// in flight, Dispensed equals the vaccinations completed: every dose
// reserved for a vaccination that did not complete was returned.
type Stock struct {
	Initial   int64 `json:"initial"`
	Doses     int64 `json:"doses"`
	Received  int64 `json:"received"`
	Dispensed int64 `json:"dispensed"`
}

// InitStock returns an agent Init that opens the stock with doses the
// first time the depot's store is used.
func InitStock(doses int64) func(ctx context.Context, s agent.Seeder) error {
	return func(ctx context.Context, s agent.Seeder) error {
		_, err := s.Init(ctx, StockKey, Stock{Initial: doses, Doses: doses})
		return err
	}
}

// Serial reports whether role's state is one key every saga touches: the
// depot's stock.
func Serial(role string) bool { return role == Depot }

// Steps returns the steps role serves, or an error for an unknown role.
func Steps(role string) ([]agent.Step, error) {
	switch role {
	case Patient:
		return []agent.Step{{Saga: Vaccinate, Name: "patient_books", Handler: book}}, nil
	case Depot:
		return []agent.Step{
			{Saga: Vaccinate, Name: "depot_reserves_dose", Handler: reserve},
			{Saga: Restock, Name: "depot_receives", Handler: receive},
		}, nil
	case Clinic:
		return []agent.Step{
			{Saga: Vaccinate, Name: "clinic_vaccinates", Handler: vaccinate},
			{Saga: Restock, Name: "clinic_orders", Handler: order},
		}, nil
	}
	return nil, fmt.Errorf("unknown vaccination role %q (want %s, %s or %s)", role, Patient, Depot, Clinic)
}

// patientKey is the state key of what patient's role knows of patient id.
func patientKey(id string) string { return "patient." + id }

// patient reads the patient id from cmd; a missing one is a rejection.
func patient(cmd *messages.Command) (string, error) {
	id, err := cmd.Context.String(KeyPatient)
	if err != nil || messages.CheckToken(KeyPatient, id) != nil {
		return "", agent.Reject("no valid %s in the context", KeyPatient)
	}
	return id, nil
}

// book records the patient's booking; a patient vaccinated already is
// turned away.
var book = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		id, err := patient(cmd)
		if err != nil {
			return nil, err
		}
		var booked string
		if _, err := tx.Get(patientKey(id), &booked); err != nil {
			return nil, err
		}
		if booked != "" {
			return nil, agent.Reject("patient %s is booked already, by %s", id, booked)
		}
		return messages.Context{}.MustSet("booked", true), tx.Put(patientKey(id), cmd.SagaID)
	},
	Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
		id, err := patient(cmd)
		if err != nil {
			return nil // the execute was rejected for it: nothing booked
		}
		var booked string
		if _, err := tx.Get(patientKey(id), &booked); err != nil {
			return err
		}
		if booked != cmd.SagaID {
			return nil
		}
		return tx.Put(patientKey(id), "")
	},
}

// stockChange applies change to the stock in tx and returns it.
func stockChange(tx agent.Tx, change func(*Stock) error) (Stock, error) {
	var s Stock
	ok, err := tx.Get(StockKey, &s)
	if err != nil {
		return s, err
	}
	if !ok {
		return s, agent.Reject("the depot has no stock")
	}
	if err := change(&s); err != nil {
		return s, err
	}
	return s, tx.Put(StockKey, s)
}

// reserve takes a dose from the shared stock; an empty stock is a
// rejection. Its compensation, return_dose, puts the dose back.
var reserve = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
		s, err := stockChange(tx, func(s *Stock) error {
			if s.Doses == 0 {
				return agent.Reject("no dose in stock")
			}
			s.Doses--
			s.Dispensed++
			return nil
		})
		if err != nil {
			return nil, err
		}
		return messages.Context{}.MustSet("dose_reserved", true).MustSet("doses_left", s.Doses), nil
	},
	Compensate: func(_ context.Context, tx agent.Tx, _ *messages.Command) error {
		_, err := stockChange(tx, func(s *Stock) error {
			s.Doses++
			s.Dispensed--
			return nil
		})
		return err
	},
}

// receive adds a restock's doses to the stock; send_back takes them out
// again, as far as they are still there.
var receive = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		n, err := cmd.Context.Int64(KeyDoses)
		if err != nil || n <= 0 {
			return nil, agent.Reject("no positive %s in the context", KeyDoses)
		}
		s, err := stockChange(tx, func(s *Stock) error {
			s.Doses += n
			s.Received += n
			return nil
		})
		if err != nil {
			return nil, err
		}
		return messages.Context{}.MustSet("doses_received", n).MustSet("doses_left", s.Doses), nil
	},
	Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
		n, _ := cmd.Context.Int64(KeyDoses)
		_, err := stockChange(tx, func(s *Stock) error {
			back := min(n, s.Doses)
			s.Doses -= back
			s.Received -= back
			return nil
		})
		return err
	},
}

// vaccinate gives the dose, unless the patient has a fever.
var vaccinate = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		id, err := patient(cmd)
		if err != nil {
			return nil, err
		}
		var fever bool
		if cmd.Context.Get(KeyFever, &fever) == nil && fever {
			return nil, agent.Reject("patient %s has a fever", id)
		}
		var given bool
		if _, err := tx.Get("vaccinated."+id, &given); err != nil {
			return nil, err
		}
		return messages.Context{}.MustSet("vaccinated", true), tx.Put("vaccinated."+id, true)
	},
	Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
		id, err := patient(cmd)
		if err != nil {
			return nil
		}
		var given bool
		if _, err := tx.Get("vaccinated."+id, &given); err != nil {
			return err
		}
		return tx.Put("vaccinated."+id, false)
	},
}

// order records a restock order at the clinic.
var order = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		var orders int64
		if _, err := tx.Get("orders", &orders); err != nil {
			return nil, err
		}
		return messages.Context{}.MustSet("ordered", true), tx.Put("orders", orders+1)
	},
	Compensate: func(_ context.Context, tx agent.Tx, _ *messages.Command) error {
		var orders int64
		if _, err := tx.Get("orders", &orders); err != nil {
			return err
		}
		return tx.Put("orders", max(orders-1, 0))
	},
}
