"""The ui function: the dashboard's versioned static files, its security headers and its session routes."""
