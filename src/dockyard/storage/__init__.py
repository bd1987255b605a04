"""The blob store: content-addressed bytes over a driver, and upload session bytes."""
