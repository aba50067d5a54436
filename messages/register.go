package messages

import "encoding/json"

// RegisterRequest registers saga definitions, or new versions of them,
// while the system runs. Definitions is a definitions file, in the format
// docs/protocol.md gives ("Definitions files").
type RegisterRequest struct {
	V           int             `json:"v"`
	Definitions json.RawMessage `json:"definitions"`
}

// RegisterResponse answers a [RegisterRequest]: one entry per definition of
// the file, in file order, or an error and none registered.
type RegisterResponse struct {
	V          int              `json:"v"`
	Registered []RegisteredSaga `json:"registered,omitempty"`
	Error      *WireError       `json:"error,omitempty"`
}

// RegisteredSaga is one definition a register request stored.
type RegisteredSaga struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	// Latest is true when this version is now the one new sagas start
	// with; false when a later version was registered before it.
	Latest bool `json:"latest"`
	// Unchanged is true when this version was registered already, with
	// the same content.
	Unchanged bool `json:"unchanged,omitempty"`
}
