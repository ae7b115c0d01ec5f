"""Call applications that run on a SIP leg: the echo test line; bot drivers live in drivers/."""
