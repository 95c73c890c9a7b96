# METADATA
# description: Test fixture. The decision is whatever input.decision holds, undefined without it.
package writ.grant

decision := input.decision
