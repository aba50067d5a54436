// Command household-agent serves the flood sagas' household steps. Run several copies to
// share the work. See package agentmain for the flags; -h lists them.
package main

import (
	"os"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
)

func main() {
	os.Exit(agentcmd.Main(flood.Household))
}
