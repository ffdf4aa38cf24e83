"""Turning reports into things people look at: Plotly charts and the self-contained HTML report. Imports
`core.measure` (the report's types) and below; never streamlit.
"""
