//go:build !goexperiment.jsonv2

package wirejson_test

// jsonV2 is empty without GOEXPERIMENT=jsonv2.
func jsonV2() []library { return nil }
