"""Bot protocol drivers: each speaks one bot protocol and knows nothing of SIP."""
