package obslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// topLevel are the fields a schema line may have at the top level, and
// whether each is required.
var topLevel = map[string]bool{
	FieldTime: true, FieldLevel: true, FieldMessage: true, FieldSchema: true, FieldService: true,
	FieldRegion: false, FieldEvent: false, FieldTraceID: false, FieldSpanID: false, FieldRequestID: false,
	FieldTenant: false, FieldSatellite: false, FieldQueryID: false, FieldUser: false, FieldAttrs: false,
}

var levels = map[string]bool{"DEBUG": true, "INFO": true, "WARN": true, "ERROR": true}

// Validate checks one line against the log schema (docs/logging.md): a JSON
// object with the required fields, known top-level fields only, strings
// where strings belong and the caller's attributes under "attrs".
func Validate(line []byte) error {
	line = bytes.TrimSpace(line)
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(line, &rec); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	for k := range rec {
		if _, ok := topLevel[k]; !ok {
			return fmt.Errorf("unknown top-level field %q (callers' attributes go under %q)", k, FieldAttrs)
		}
	}
	str := map[string]string{}
	for k, required := range topLevel {
		raw, ok := rec[k]
		if !ok {
			if required {
				return fmt.Errorf("missing field %q", k)
			}
			continue
		}
		if k == FieldAttrs {
			if len(raw) == 0 || raw[0] != '{' {
				return fmt.Errorf("%q must be an object", k)
			}
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("field %q must be a string", k)
		}
		str[k] = s
	}
	if str[FieldSchema] != SchemaVersion {
		return fmt.Errorf("schema %q, want %q", str[FieldSchema], SchemaVersion)
	}
	if _, err := time.Parse(time.RFC3339Nano, str[FieldTime]); err != nil {
		return fmt.Errorf("time %q is not RFC 3339", str[FieldTime])
	}
	if !levels[str[FieldLevel]] {
		return fmt.Errorf("level %q is not DEBUG, INFO, WARN or ERROR", str[FieldLevel])
	}
	if str[FieldService] == "" {
		return fmt.Errorf("service is empty")
	}
	return nil
}
