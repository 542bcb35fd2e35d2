"""What the tests share: helpers imported by name, and the fixtures plugin (`support.fixtures`)."""
