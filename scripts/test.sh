#!/usr/bin/env bash
# Install pneumoscan with every extra into a virtual environment and run the default test suite.
# Used as-is by CI (.ci/run). Needs only Python 3.11; installs Debian's chromium for the browser tests,
# tcmalloc for the allocator test and Orthanc + dicom3tools for the DICOM node tests when it can.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[all,dev]"
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian chromium for the browser tests ..."
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) \
      || echo "could not install chromium: browser tests will be skipped"
  else
    echo "chromium not found and cannot be installed here: browser tests will be skipped"
  fi
fi
# tcmalloc: long-running commands restart with it when installed; installing it lets CI test that path too.
if [ ! -e /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || echo "could not install tcmalloc: its test will be skipped"
fi
# Orthanc (a real PACS, with its DICOMweb plugin) and dciodvfy (dicom3tools) for the DICOM node tests.
if { ! command -v Orthanc >/dev/null 2>&1 || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
     || ! command -v dciodvfy >/dev/null 2>&1; } && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian orthanc, orthanc-dicomweb and dicom3tools for the DICOM node tests ..."
  (apt-get install -y -q orthanc orthanc-dicomweb dicom3tools >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q orthanc orthanc-dicomweb dicom3tools >/dev/null; }) \
    || echo "could not install orthanc/dicom3tools: the tests against a real PACS will be skipped"
fi
export HF_HUB_OFFLINE=1
exec "$VENV/bin/python" -m pytest "$@"
