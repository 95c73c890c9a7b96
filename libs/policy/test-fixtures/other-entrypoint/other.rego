# METADATA
# description: Test fixture. A valid policy without the writ/grant/decision entrypoint.
package other

allow := true
