"""pneumoscan where the images are: a DICOM node (Storage SCP), a DICOMweb poller, and results as DICOM Structured
Reports.

- :mod:`~pneumoscan.dicomnode.conformance`: the SOP classes and transfer syntaxes the node accepts and sends.
- :mod:`~pneumoscan.dicomnode.queue`: the durable (SQLite) work queue that makes every received instance scored
  exactly once, across bursts and restarts.
- :mod:`~pneumoscan.dicomnode.scoring`: one DICOM instance → a :class:`~pneumoscan.dicomnode.scoring.Outcome`
  (the model's answer, or why there is none).
- :mod:`~pneumoscan.dicomnode.report`: an Outcome → a Comprehensive SR (and a Secondary Capture of the Grad-CAM
  overlay) with highdicom.
- :mod:`~pneumoscan.dicomnode.node`: the Storage SCP, its worker and the forwarder (pynetdicom).
- :mod:`~pneumoscan.dicomnode.web`: the QIDO-RS / WADO-RS / STOW-RS poller (dicomweb-client).

pynetdicom, highdicom and dicomweb-client come with the ``dicom-node`` extra and are imported lazily; nothing here is
imported by the rest of pneumoscan. Log lines name instances by SOP Instance UID only, never by patient name, ID,
birth date or accession number (see docs/DICOM.md, "PHI").
"""
