# METADATA
# description: |
#   Test fixture. Traps (eval_conflict_error) when input.a and input.b are both true;
#   otherwise allows for 60 s when input.a is true.
package writ.grant

decision := {"allow": true, "reasons": ["a"], "max_ttl_seconds": 60, "max_uses": 1} if input.a

decision := {"allow": false, "reasons": ["b"]} if input.b
