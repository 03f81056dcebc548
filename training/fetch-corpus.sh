#!/usr/bin/env bash
# Unpack the extra permissively licensed packages of the training corpus (source only,
# nothing imported) into training/work/site, then build the corpus from them plus the
# standard library and what is installed (training/data.py checks each licence):
#   bash training/fetch-corpus.sh && python -m training.data training/work/data training/work/site
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-deps --no-compile --target training/work/site \
  aiohttp==3.14.5 alembic==1.20.1 astropy==8.0.2 babel==2.18.0 black==26.10.1 bokeh==3.9.2 celery==5.7.0 dask==2026.8.0 distributed==2026.8.0 django==5.2.19 docutils==0.23 fastapi==0.165.0 flask==3.1.3 httpx==0.28.1 jinja2==3.1.6 kombu==5.7.0 marshmallow==4.4.0 matplotlib==3.11.2 mypy==2.4.1 numpy==2.4.6 pandas==3.1.1 scikit_learn==1.9.1 sphinx==9.0.4 sqlalchemy==2.1.9 sqlglot==30.30.0 starlette==1.10.0 statsmodels==0.15.0 textual==8.2.8 tornado==6.6.1 twisted==26.10.0 werkzeug==3.1.9 
