# METADATA
# description: |
#   Test fixture: answers a deny at once for any request, unless the input carries an array
#   `spin`, over which it iterates n cubed times (about 13 s for 560 elements): a policy that
#   passes the probe's sample request but not the input a dry run gives it.
package writ.grant

import rego.v1

_spun if {
	some x in input.spin
	some y in input.spin
	some z in input.spin
	x == y
	y == z
	z == "never"
}

decision := {"allow": false, "reasons": ["spun"], "max_ttl_seconds": 60, "max_uses": 1} if _spun

decision := {"allow": false, "reasons": ["cubic fixture"], "max_ttl_seconds": 60, "max_uses": 1} if not _spun
