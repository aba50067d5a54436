package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/natsaga/natsaga/saga"
)

// ReadDefinitions reads the definitions file named file, at most
// saga.MaxFileSize bytes, and parses it. It returns the file's bytes, to
// send as they are, and its definitions, or an error naming the file and,
// for a bad definition, the definition and the field.
func ReadDefinitions(file string) ([]byte, []saga.Definition, error) {
	// Opening a pipe waits for a writer, deaf to signals.
	if info, err := os.Stat(file); err == nil && !info.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file: %w", file, saga.ErrInvalidDefinition)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, saga.MaxFileSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(data) > saga.MaxFileSize {
		// Read no further than the limit, and say the file's size, not
		// what was read of it.
		size := "more than " + fmt.Sprint(saga.MaxFileSize) + " bytes"
		if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
			size = fmt.Sprintf("%d bytes", info.Size())
		}
		return nil, nil, fmt.Errorf("%s: definitions file: %s, over the limit of %d: %w", file, size, saga.MaxFileSize, saga.ErrInvalidDefinition)
	}
	defs, err := saga.ParseFile(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	return data, defs, nil
}
