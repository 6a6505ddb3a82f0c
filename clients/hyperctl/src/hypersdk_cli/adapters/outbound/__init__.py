"""httpx for the API, files for the configuration and sessions."""
