"""ctpet-srgan: dual-branch SRGAN that super-resolves PET with co-registered CT as context.

Modules (one concept each): geometry, dicom_io, nifti_io, suv, degradation, records, pipeline,
normalization, models, vgg, losses, training, export, inference, fusion, metrics.
"""

__version__ = "0.1.0"
