//go:build goexperiment.jsonv2

package wirejson_test

import jsonv2 "encoding/json/v2"

// jsonV2 is encoding/json/v2, built with GOEXPERIMENT=jsonv2.
func jsonV2() []library {
	return []library{{"json-v2",
		func(v any) ([]byte, error) { return jsonv2.Marshal(v) },
		func(data []byte, v any) error { return jsonv2.Unmarshal(data, v) }}}
}
