package manifestcheck

import (
	"flag"
	"strings"
	"testing"
)

func demoFlags(fs *flag.FlagSet) {
	fs.String("addr", ":8080", "")
	fs.String("nats-url", "", "")
	fs.Bool("verbose", false, "")
}

func TestCheck(t *testing.T) {
	flags := map[string]FlagSetFunc{"demo": demoFlags}
	for _, tc := range []struct {
		dir     string
		flags   map[string]FlagSetFunc
		wantErr string // "" = valid
	}{
		{"good", flags, ""},
		{"badfield", flags, `unknown field "readinesProbe"`},
		{"badflag", flags, "flag provided but not defined: -nats-urls"},
		{"good", map[string]FlagSetFunc{}, "no flag set registered"},
		{"nokustomize", flags, "kustomization.yaml"},
		{"rootok", flags, ""},
		{"rootnoreason", flags, "runAsNonRoot must be true"},
		{"rootnouser", flags, "say runAsUser: 0"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			err := Check("testdata/"+tc.dir, tc.flags)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("valid manifests rejected: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("invalid manifests accepted, want error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
