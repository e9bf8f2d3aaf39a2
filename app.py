"""tffd-viz: explore baseline vs Tf-FD-trained networks in the browser.

Run with ``streamlit run app.py``. This file only declares the pages; the shared sidebar lives in
``app_pages/common.py`` and every computation in the ``tffd_viz`` library.
"""

import streamlit as st

from app_pages.common import sidebar

st.set_page_config(page_title="tffd-viz", page_icon=":material/insights:", layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/ranking.py", title="Channel ranking", icon=":material/sort:"),
    st.Page("app_pages/losses.py", title="Losses and lambdas", icon=":material/tune:"),
    st.Page("app_pages/whatif.py", title="Try lambdas", icon=":material/science:"),
    st.Page("app_pages/feature_maps.py", title="Feature maps", icon=":material/grid_view:"),
    st.Page("app_pages/similarity.py", title="Similarity", icon=":material/compare:"),
    st.Page("app_pages/cka.py", title="CKA", icon=":material/blur_on:"),
    st.Page("app_pages/attribution.py", title="Attribution", icon=":material/visibility:"),
    st.Page("app_pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("app_pages/evolution.py", title="Evolution", icon=":material/timeline:"),
]

navigation = st.navigation(PAGES)
sidebar()
navigation.run()
