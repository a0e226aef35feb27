package apikey

import "testing"

func TestGenerateParseMatch(t *testing.T) {
	k := Generate(KindAPI)
	p, err := Prefix(KindAPI, k)
	if err != nil || len(p) != prefixLen {
		t.Fatalf("%q: %q %v", k, p, err)
	}
	if _, err := Prefix(KindDeploy, k); err == nil {
		t.Fatal("an API key parsed as a deploy key")
	}
	if !Matches(k, Hash(k)) || Matches(k+"x", Hash(k)) {
		t.Fatal("hash comparison")
	}
	if Generate(KindAPI) == k {
		t.Fatal("two keys are equal")
	}
	for _, bad := range []string{"", "ok_", "ok_abc_def", "ok_abcdefgh_short", string(make([]byte, 100))} {
		if _, err := Prefix(KindAPI, bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
