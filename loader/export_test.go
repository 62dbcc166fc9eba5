package loader

import "errors"

// FailFinalPass makes the conversion of map name from version from fail in
// its second pass, until restore is called: a migration's failure, for the
// revert's test.
func FailFinalPass(name string, from uint32) (restore func()) {
	orig := converters[name][from]
	converters[name][from] = func(dp *Dataplane, mg *mapMigration, final bool) error {
		if final {
			return errors.New("injected failure")
		}
		return orig(dp, mg, final)
	}
	return func() { converters[name][from] = orig }
}
