"""The web surface: the Gradio server and its HTTP API, auth, lifecycle, metrics, the error boundary, and the UI
tabs (`ui/`). Everything here calls the service (app/service.py) and nothing below it."""
