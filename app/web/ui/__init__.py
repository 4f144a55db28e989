"""The browser UI: Gradio Blocks with one module per tab. Layout and formatting only; every handler is a
plain function that calls the service, so the UI, the HTTP API and the CLI share limits and messages.
"""
