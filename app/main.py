"""Squeezelab dashboard entry point (`streamlit run app/main.py`)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Squeezelab", layout="wide")
st.title("Squeezelab")
st.write("See what pruning and quantization do to a neural network, measured in ONNX Runtime, and export the result.")
st.info("The interactive dashboard is on its way. Meanwhile the engine runs from the CLI: `python -m core --help`.")
