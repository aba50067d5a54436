package saga

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/natsaga/natsaga/messages"
)

// MaxFileSize bounds a definitions file, on disk or on the wire, where it
// travels inside a register request of at most messages.MaxPayload bytes.
const MaxFileSize = 192 << 10

// maxNameLen bounds a name in a definitions file, as the identifier grammar
// does (see validName).
const maxNameLen = 64

// File is a definitions file: the roles its sagas may name and the sagas.
// Its JSON form is documented in docs/protocol.md ("Definitions files"):
//
//	{"roles": ["household", "government"],
//	 "sagas": [{"name": "subsidy_application", "subject": "subsidy", "version": 1,
//	            "timeout_ticks": 3,
//	            "steps": [{"name": "household_applies", "role": "household",
//	                       "compensation": "cancel_application", "timeout_ticks": 1,
//	                       "retry": {"max_attempts": 3, "backoff": "20ms", "max_backoff": "1s"}}]}]}
type File struct {
	// Roles lists every role a step may name.
	Roles []string   `json:"roles"`
	Sagas []FileSaga `json:"sagas"`
}

// FileSaga is one saga of a [File]. A field left out takes its default; a
// field given must be valid (a timeout given as 0 is refused).
type FileSaga struct {
	Name        string `json:"name"`
	Subject     string `json:"subject"`
	Description string `json:"description,omitempty"`
	// Version is the definition's version, from 1; left out, 1.
	Version *int64 `json:"version,omitempty"`
	// TimeoutTicks bounds the whole saga; left out, the sum of the
	// steps' timeouts.
	TimeoutTicks      *int64     `json:"timeout_ticks,omitempty"`
	CompensationRetry *FileRetry `json:"compensation_retry,omitempty"`
	Steps             []FileStep `json:"steps"`
}

// FileStep is one step of a [FileSaga].
type FileStep struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	Compensation string `json:"compensation"`
	// TimeoutTicks is the step's timeout; left out, DefaultTimeoutTicks.
	TimeoutTicks *int64     `json:"timeout_ticks,omitempty"`
	Retry        *FileRetry `json:"retry,omitempty"`
}

// FileRetry is a [RetryPolicy] in a [File]; durations are Go duration
// strings such as "20ms". A field left out takes its default.
type FileRetry struct {
	MaxAttempts *int   `json:"max_attempts,omitempty"`
	Backoff     string `json:"backoff,omitempty"`
	MaxBackoff  string `json:"max_backoff,omitempty"`
}

// FieldError is the error of a definitions file that cannot be loaded: it
// names the definition and the field. It wraps [ErrInvalidDefinition].
type FieldError struct {
	// Definition is the saga's name, or "" for a field of the file.
	Definition string
	// Field is the field's path, for example "steps[1].role".
	Field  string
	Reason string
}

// Error returns the definition, the field and the reason.
func (e *FieldError) Error() string {
	if e.Definition == "" {
		return fmt.Sprintf("definitions file: field %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("definition %q: field %s: %s", e.Definition, e.Field, e.Reason)
}

// Unwrap returns [ErrInvalidDefinition].
func (e *FieldError) Unwrap() error { return ErrInvalidDefinition }

// ParseFile decodes and checks a definitions file and returns its sagas as
// definitions, in file order. It returns an error wrapping
// [ErrInvalidDefinition]: a [*FieldError] for each bad field, joined, or a
// decoding error for a file that is not the format (an unknown field
// included, so that a misspelt field is not silently ignored).
func ParseFile(data []byte) ([]Definition, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("definitions file: %d bytes, more than %d: %w", len(data), MaxFileSize, ErrInvalidDefinition)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("definitions file: empty: %w", ErrInvalidDefinition)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f File
	err := dec.Decode(&f)
	if err == nil {
		err = exactFields(data)
	}
	if err != nil {
		what := messages.JSONError(err)
		if errors.Is(err, io.ErrUnexpectedEOF) {
			what = "the file ends inside the JSON (a bracket, brace or quote not closed)"
		}
		return nil, fmt.Errorf("definitions file: %s%s: %w", where(data, err), what, ErrInvalidDefinition)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("definitions file: data after the JSON object: %w", ErrInvalidDefinition)
	}
	return f.Definitions()
}

// exactFields returns an unknown field error, as encoding/json's, for the
// first key of data's objects (sorted, an object's) that is not a field
// of its object written exactly: encoding/json takes a key that differs
// from a field's name in case only ("Roles", "TIMEOUT_TICKS"), and of
// one field given twice in two cases counts the last silently. It
// returns an error for a field given null too.
func exactFields(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	return fieldsOf(v, reflect.TypeFor[File]())
}

// fieldsOf checks v, decoded JSON, against t, the type it was decoded
// into, as exactFields says.
func fieldsOf(v any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Slice:
		elems, _ := v.([]any)
		for _, e := range elems {
			if err := fieldsOf(e, t.Elem()); err != nil {
				return err
			}
		}
	case reflect.Struct:
		obj, _ := v.(map[string]any)
		for _, key := range slices.Sorted(maps.Keys(obj)) {
			f, ok := fieldNamed(t, key)
			if !ok {
				return fmt.Errorf("json: unknown field %q", key)
			}
			if obj[key] == nil {
				// encoding/json leaves a field given null as it was:
				// taken for left out, its default, without a word.
				return fmt.Errorf("field %q is null: give it a value, or leave it out for its default", key)
			}
			if err := fieldsOf(obj[key], f.Type); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldNamed returns the field of struct type t whose JSON name is key.
func fieldNamed(t reflect.Type, key string) (reflect.StructField, bool) {
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// where returns "line L, column C: " of the place in data that err, an
// error of decoding it, is about: a syntax error's offset, or the first
// occurrence of an unknown field's key; "" when it names none.
func where(data []byte, err error) string {
	offset := -1
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		offset = int(syntax.Offset) - 1
	case errors.As(err, &typ):
		offset = int(typ.Offset) - 1
	case errors.Is(err, io.ErrUnexpectedEOF):
		// Where it ends.
		offset = len(bytes.TrimRight(data, " \t\r\n"))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		key := strings.TrimPrefix(err.Error(), "json: unknown field ")
		offset = bytes.Index(data, []byte(key))
	}
	if offset < 0 || offset > len(data) {
		return ""
	}
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := offset - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d: ", line, col)
}

// Definitions checks f and returns its sagas as definitions, in file order.
// It returns the errors that [ParseFile] describes.
func (f *File) Definitions() ([]Definition, error) {
	var errs []error
	bad := func(def, field, format string, args ...any) {
		errs = append(errs, &FieldError{Definition: def, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	name := func(def, field, s string) {
		if !validName(s) {
			bad(def, field, "%q is not a name: 1 to %d of A-Z a-z 0-9 _ -", s, maxNameLen)
		}
	}
	if len(f.Roles) == 0 {
		bad("", "roles", "no roles")
	}
	roles, folded := map[string]bool{}, map[string]string{}
	for i, r := range f.Roles {
		name("", fmt.Sprintf("roles[%d]", i), r)
		if roles[r] {
			bad("", fmt.Sprintf("roles[%d]", i), "duplicate role %q", r)
		} else if o, ok := folded[strings.ToLower(r)]; ok {
			bad("", fmt.Sprintf("roles[%d]", i), "role %q differs only in case from role %q, and would share its streams", r, o)
		}
		roles[r], folded[strings.ToLower(r)] = true, r
	}
	if len(f.Sagas) == 0 {
		bad("", "sagas", "no sagas")
	}
	var defs []Definition
	names, subjects := map[string]bool{}, map[string]bool{}
	for i, s := range f.Sagas {
		def := s.Name
		if def == "" {
			def = fmt.Sprintf("sagas[%d]", i)
		}
		name(def, "name", s.Name)
		name(def, "subject", s.Subject)
		if names[s.Name] {
			bad(def, "name", "duplicate saga %q", s.Name)
		}
		if subjects[s.Subject] {
			bad(def, "subject", "duplicate subject %q", s.Subject)
		}
		names[s.Name], subjects[s.Subject] = true, true
		d := Definition{Name: s.Name, Subject: s.Subject, Description: s.Description, Version: 1}
		if s.Version != nil {
			if *s.Version < 1 {
				bad(def, "version", "%d is not a version: 1 or more", *s.Version)
			}
			d.Version = *s.Version
		}
		if s.TimeoutTicks != nil {
			if *s.TimeoutTicks < 1 {
				bad(def, "timeout_ticks", "%d is not a timeout: 1 tick or more", *s.TimeoutTicks)
			}
			d.TimeoutTicks = *s.TimeoutTicks
		}
		if s.CompensationRetry != nil {
			d.CompensationRetry = s.CompensationRetry.policy(func(field, format string, args ...any) {
				bad(def, "compensation_retry."+field, format, args...)
			})
		}
		if len(s.Steps) == 0 {
			bad(def, "steps", "no steps: a saga has at least one")
		}
		seen := map[string]bool{}
		for j, st := range s.Steps {
			field := fmt.Sprintf("steps[%d]", j)
			name(def, field+".name", st.Name)
			if st.Name == messages.CompensateToken {
				bad(def, field+".name", "%q is reserved", st.Name)
			}
			if seen[st.Name] {
				bad(def, field+".name", "duplicate step %q", st.Name)
			}
			seen[st.Name] = true
			if !roles[st.Role] {
				bad(def, field+".role", "unknown role %q: not in the file's roles %v", st.Role, f.Roles)
			}
			if st.Compensation != "" {
				name(def, field+".compensation", st.Compensation)
			}
			step := Step{Name: st.Name, Role: st.Role, Compensation: st.Compensation}
			if st.TimeoutTicks != nil {
				if *st.TimeoutTicks < 1 {
					bad(def, field+".timeout_ticks", "%d is not a timeout: 1 tick or more", *st.TimeoutTicks)
				}
				step.TimeoutTicks = *st.TimeoutTicks
			}
			if st.Retry != nil {
				step.Retry = st.Retry.policy(func(f, format string, args ...any) {
					bad(def, field+".retry."+f, format, args...)
				})
			}
			d.Steps = append(d.Steps, step)
		}
		defs = append(defs, d)
	}
	// A name and a subject are looked up alike (a start names either):
	// a saga's name that is another's subject would make one of the two
	// unreachable, and the engine refuses the second of them.
	subjectOf := map[string]string{}
	for _, s := range f.Sagas {
		if _, ok := subjectOf[s.Subject]; !ok { // a duplicate is said above
			subjectOf[s.Subject] = s.Name
		}
	}
	for _, s := range f.Sagas {
		if o, ok := subjectOf[s.Name]; ok && o != s.Name {
			bad(s.Name, "name", "%q is the subject of saga %q: a name and a subject are looked up alike", s.Name, o)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return defs, nil
}

// validName reports whether s is a name of the identifier grammar: 1 to
// maxNameLen characters, each a letter, a digit, '_' or '-'. A name is
// also a subject token.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen || !messages.ValidToken(s) {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// policy returns r as a retry policy, reporting each bad field to bad.
func (r *FileRetry) policy(bad func(field, format string, args ...any)) RetryPolicy {
	var p RetryPolicy
	if r.MaxAttempts != nil {
		if *r.MaxAttempts < 1 {
			bad("max_attempts", "%d is not a number of attempts: 1 or more", *r.MaxAttempts)
		}
		p.MaxAttempts = *r.MaxAttempts
	}
	dur := func(field, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		switch {
		case err != nil || d <= 0:
			bad(field, "%q is not a positive duration such as \"20ms\"", s)
		case d > MaxRetryBackoff:
			bad(field, "%q is more than %s, the longest backoff", s, MaxRetryBackoff)
		}
		return d
	}
	p.Backoff = dur("backoff", r.Backoff)
	p.MaxBackoff = dur("max_backoff", r.MaxBackoff)
	return p
}

// FileOf returns the definitions file that holds defs, with the roles they
// name, sorted; [ParseFile] of its JSON gives defs back.
func FileOf(defs []Definition) File {
	var f File
	for _, d := range defs {
		s := FileSaga{Name: d.Name, Subject: d.Subject, Description: d.Description}
		if d.Version != 0 {
			s.Version = ptr(d.Version)
		}
		if d.TimeoutTicks != 0 {
			s.TimeoutTicks = ptr(d.TimeoutTicks)
		}
		s.CompensationRetry = fileRetry(d.CompensationRetry)
		for _, st := range d.Steps {
			fs := FileStep{Name: st.Name, Role: st.Role, Compensation: st.Compensation, Retry: fileRetry(st.Retry)}
			if st.TimeoutTicks != 0 {
				fs.TimeoutTicks = ptr(st.TimeoutTicks)
			}
			s.Steps = append(s.Steps, fs)
			if !slices.Contains(f.Roles, st.Role) {
				f.Roles = append(f.Roles, st.Role)
			}
		}
		f.Sagas = append(f.Sagas, s)
	}
	slices.Sort(f.Roles)
	return f
}

func fileRetry(p RetryPolicy) *FileRetry {
	if p == (RetryPolicy{}) {
		return nil
	}
	r := &FileRetry{}
	if p.MaxAttempts != 0 {
		r.MaxAttempts = ptr(p.MaxAttempts)
	}
	if p.Backoff != 0 {
		r.Backoff = p.Backoff.String()
	}
	if p.MaxBackoff != 0 {
		r.MaxBackoff = p.MaxBackoff.String()
	}
	return r
}

func ptr[T any](v T) *T { return &v }
