"""Laterality of the synthetic CT series, as the General Series module (DICOM PS3.3 C.7.3.1) conditions it.

Laterality (0020,0060), type 2C, is required (R or L, empty only when actually unknown) when the body part examined is
a paired structure and Image Laterality (0020,0062) is absent, and must be absent otherwise. The CT series follows
the MR it comes from:

- the MR's Image Laterality (R, L, U: unpaired, B: both) is copied as it is, and Laterality left out;
- an unpaired Body Part Examined (HEAD, PELVIS, CHEST ...): no Laterality, whatever the MR wrote;
- otherwise the MR's Laterality (R or L) is copied;
- a paired body part (KNEE, BREAST ...) with no side in the MR: Laterality empty (unknown), never invented, and a
  note says so;
- no body part named, one in neither list below (THORAX, ARTERY ...), or no DICOM MR at all: empty, since nothing
  says that it is unpaired nor which side it is.

Pairedness: Body Part Examined defined terms (PS3.16 Table L-1) with the "Paired Structure" flag of their codes in
Table L-5; terms flagged both ways there (ARTERY, VEIN, URETER ...) are in neither list; of the terms L-5 leaves out,
CHEST is unpaired and FIBULA paired. dicom3tools' dciodvfy knows fewer unpaired parts (65 of the 312 terms): for the
others the standard calls unpaired (KIDNEY, SIGMOID, SPINALCORD ...) it reports the absent Laterality as missing, and
it takes CEREBELLUM, ILIUM and MAXILLA as unpaired; the standard's table is followed here.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

PAIRED = frozenset('''
    ACA ACJOINT ADRENAL ANKLE ANTECUBITALV ANTTIBIALA ARM AXILLA AXILLARYA AXILLARYV BRACHIALA BRACHIALV BREAST
    BRONCHUS BULB BUTTOCK CALCANEUS CALF CAROTID CCA CEPHALICV CEREBELLUM CEREBHEMISPHERE CEREBRALA CFA CFV
    CHOROIDPLEXUS CLAVICLE COMILIACA COMILIACV CORNEA EAC EAR ECA ELBOW EPIDIDYMIS EXTILIACA EXTILIACV EXTJUGV
    EXTREMITY EYE EYELID FACIALA FEMORALA FEMORALV FEMUR FIBULA FINGER FOOT FOREARM GASTRICV GENICULARA GLUTEAL
    GSV HAND HEPATICA HEPATICV HIP HUMERUS IAC ICA ILIACA ILIACV ILIUM INGUINAL INNOMINATEV INTILIACA
    INTJUGULARV INTMAMMARYA JOINT KNEE LACRIMALA LATVENTRICLE LEG LINGUALA LUMBAR LUMBARA LUNG MASTOID MAXILLA
    MCA OCCIPTALV OCCPITALA OPHTHALMICA OPTICCANAL ORBIT OVARY PARATHYROID PAROTID PATELLA PCA PENILEA PERONEALA
    POPLITEALA POPLITEALFOSSA POPLITEALV POSCOMMA POSTIBIALA PROFFEMA PROFFEMV PULMONARYA PULMONARYV RADIALA
    RADIUS RADIUSULNA RENALA RENALV RIB SAPHENOUSV SCAPULA SCJOINT SCLERA SCROTUM SESAMOID SFA SFJ SFV SHOULDER
    SIJOINT SUBCLAVIANA SUBCLAVIANV SUBCOSTAL SUBMANDIBULAR SUPRACLAVICULAR SUPTHYROIDA TESTIS THALAMUS THIGH
    THUMB TIBIA TIBIAFIBULA TMJ TOE ULNA ULNARA VERTEBRALA WRIST ZYGOMA
'''.split())

UNPAIRED = frozenset('''
    3RDVENTRICLE 4THVENTRICLE ABDOMEN ABDOMENPELVIS ABDOMINALAORTA AMNIOTICFLUID ANTCARDIACV ANTCOMMA ANTSPINALA
    ANUSRECTUMSIGMD AORTA AORTICARCH APPENDIX ASCAORTA ASCENDINGCOLON AZYGOSVEIN BACK BASILARA BILEDUCT BLADDER
    BLADDERURETHRA BRAIN CELIACA CERVIX CHEST CHESTABDOMEN CHESTABDPELVIS CIRCLEOFWILLIS COCCYX COLON
    COMMONBILEDUCT CORONARYARTERY CORONARYSINUS CSPINE CTSPINE CULDESAC DESCAORTA DESCENDINGCOLON DUODENUM
    ENDOCARDIAC ENDOESOPHAGEAL ENDOMETRIUM ENDONASAL ENDONASOPHARYNYX ENDORECTAL ENDORENAL ENDOURETHRAL
    ENDOVAGINAL ENDOVASCULAR ENDOVESICAL EPIGASTRIC ESOPHAGUS FACE FLANK FONTANEL GALLBLADDER GESTSAC HEAD
    HEADNECK HEART HYPOGASTRIC HYPOPHARYNX ILEUM INFMESA INFVENACAVA INNOMINATEA INTRACRANIAL JAW JEJUNUM KIDNEY
    LARGEINTESTINE LARYNX LATRIUM LFEMORALA LHEPATICV LHYPOCHONDRIAC LINGUINAL LIVER LLQ LLUMBAR LPORTALV
    LPULMONARYA LSPINE LSSPINE LSUPPULMONARYV LUMEN LUQ LVENTRICLE MEDIASTINUM MESENTRICA MESENTRICV MIDHEPATICV
    MORISONSPOUCH MOUTH NASOPHARYNX NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE PANCREAS
    PANCREATICDUCT PARASTERNAL PELVIS PENIS PERINEUM PHARYNX PHARYNXLARYNX PLACENTA PORTALV PROSTATE RATRIUM
    RECTUM RETROPERITONEUM RFEMORALA RHEPATICV RHYPOCHONDRIAC RINGUINAL RLQ RLUMBAR RPORTALV RPULMONARYA
    RSUPPULMONARYV RUQ RVENTRICLE SCALP SELLA SEMVESICLE SIGMOID SKULL SMA SMALLINTESTINE SPINALCORD SPINE
    SPLEEN SPLENICA SPLENICV SSPINE STERNUM STOMACH SUPRAPUBIC SVC THORACICAORTA THYMUS THYROID TLSPINE
    TONGUE TRACHEA TRACHEABRONCHUS TRANSVERSECOLON TSPINE UMBILICAL UMBILICALA UMBILICALV UPRURINARYTRACT
    URETHRA UTERUS VAGINA VULVA WHOLEBODY
'''.split())
SIDES = ('R', 'L')
IMAGE_LATERALITIES = ('R', 'L', 'U', 'B')
UNKNOWN = {'Laterality': ''}           # type 2: present and empty when the side is not known


def _value(header: Dataset, keyword: str) -> str:
    return str(header.get(keyword, '') or '').strip().upper()


def series_laterality(header: Dataset, label: str) -> tuple[dict[str, str], str | None]:
    """(the laterality attributes of the CT series: keyword -> value, those absent left out; a note when a paired
    body part has no known side, else None) from the MR ``header`` (its first slice); ``label`` names the series."""
    part, side, image_side = (_value(header, k) for k in ('BodyPartExamined', 'Laterality', 'ImageLaterality'))
    if image_side in IMAGE_LATERALITIES:
        return {'ImageLaterality': image_side}, None
    if part in UNPAIRED:
        return {}, None
    if side in SIDES:
        return {'Laterality': side}, None
    if part in PAIRED:
        return dict(UNKNOWN), (f'{label}: the MR examines {part}, a paired body part, but names no side (Laterality, '
                               f'Image Laterality): the synthetic CT series\' Laterality is left empty (unknown); '
                               f'enter the side in the planning system')
    return dict(UNKNOWN), None
