"""The PHI guard at the door (HIPAA Safe Harbor): refuse a file that carries direct identifiers.

Clinic exports are hand-edited and sometimes carry identifiers that must never be
stored: a pasted e-mail column, a phone number typed into ``weight_kg``, a
``Patient Name`` column someone forgot to delete. Before anything is written,
:func:`scan_frame` looks at *every* column of a file as read (contract columns
and extra columns alike, before the extra ones are dropped) and returns
:class:`PhiFinding` objects; a caller refuses the export when there is any.

Pure: polars frames in, findings out. The only I/O is
:meth:`PhiAllowList.load`, which reads the optional ``phi_allowlist.toml`` of the
export folder. Nothing here ever puts a cell value into a finding, a reason or
an exception message: findings say which column, which rule and how many rows,
never which values. See docs/phi-guard.md for the rules, thresholds and the
allow-list format.

Two kinds of rule:

* **Column names** (extra columns only: a contract column is de-identified by
  design): a normalised name (case, separators and camelCase ignored) that says
  "name", "e-mail", "phone", "address", "ZIP", "SSN", "MRN", "date of birth", ...
* **Values** (every column): vectorised regexes. High-specificity shapes
  (e-mail, SSN, phone, IP address, URL) trigger on one row, in every column,
  numeric ones included. In text columns (not INTEGER/DOUBLE contract columns)
  also: street addresses, a ZIP after a state and a common given name or a
  title next to another word (one row); "Firstname Lastname"-shaped values,
  whole-value 5-digit ZIPs and full dates in extra columns (above a share of
  the non-empty rows, see :data:`SHARE_THRESHOLDS`).

Speed: per column, one pass of a single union regex over all rows finds the
rows that could match any rule; the per-rule regexes run only on those rows
(none, for clean data), so a clean 12M-row file costs one regex pass per column.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import polars as pl

from ketaoutcomes.contract import TABLES

__all__ = [
    "ALLOWLIST_FILE",
    "PhiAllowList",
    "PhiError",
    "PhiFinding",
    "SHARE_THRESHOLDS",
    "cap_age",
    "check_frame",
    "scan_frame",
]

ALLOWLIST_FILE = "phi_allowlist.toml"
ROW_NUMBER = "_row_number"
AGE_COLUMN = "age_at_index"
AGE_CAP = 89  # Safe Harbor: ages over 89 are aggregated into "90 or older"

#: Low-specificity value rules: the share of non-empty rows that must match.
SHARE_THRESHOLDS: Mapping[str, float] = MappingProxyType({
    "value.person_name": 0.20,  # "Firstname Lastname"-shaped values (2-3 capitalised words)
    "value.zip5": 0.50,  # whole value is 12345 or 12345-6789
    "value.birth_date": 0.50,  # extra column of full dates spread over many years
})
#: value.birth_date in an extra column: the dates must also spread over at least this
#: many years (10th to 90th percentile of the year): a cohort's birth dates span
#: decades, a column of (shifted) visit dates spans a few years.
BIRTH_YEAR_SPREAD = 10
#: value.person_name, weak shape: the matching values must also be many different
#: ones (at least this many, or this share of the matching rows): a category such
#: as a site or a drug repeats a few values, a column of names has many.
NAME_MIN_DISTINCT = 20
NAME_MIN_DISTINCT_SHARE = 0.5


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class PhiFinding:
    """One column of one file that looks like it carries direct identifiers.

    ``column`` is the column name (names are not values; they may be printed),
    except for a header that itself looks like an identifier: then ``#N`` (its
    1-based position). ``rows`` is how many rows matched, never which (for a
    column-name rule: the column's non-empty cells; for a header rule: 0).
    """

    file: str
    table: str
    column: str
    rule: str
    reason: str
    rows: int

    def __str__(self) -> str:
        return f"{self.file}: column {self.column}: {self.rule}: {self.reason}"


class PhiError(ValueError):
    """The file carries what looks like direct identifiers; nothing may be stored.

    ``str()`` lists one finding a line as ``FILE: column COL: RULE: reason``;
    it never contains a cell value.
    """

    def __init__(self, findings: Iterable[PhiFinding]):
        self.findings: tuple[PhiFinding, ...] = tuple(findings)
        super().__init__(
            "refused: the export looks like it carries direct identifiers (HIPAA Safe Harbor; "
            "see docs/phi-guard.md); nothing was stored:\n" + "\n".join(str(f) for f in self.findings)
        )


# --------------------------------------------------------------------------- allow-list


@dataclass(frozen=True)
class PhiAllowList:
    """Columns a study has declared safe, from ``phi_allowlist.toml`` in the export folder.

    ``columns`` maps ``"table.column"`` to the study's reason why the column is
    not identifying. A listed column is skipped by every rule (name and values).

    The file::

        [columns]
        "patients.site" = "site codes are clinic names, approved by the data steward on 2026-03-01"
    """

    columns: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    @classmethod
    def load(cls, export_dir: Path) -> PhiAllowList:
        """The allow-list of ``export_dir``; empty when there is no ``phi_allowlist.toml``.

        Raises
        ------
        ValueError
            The file is not valid TOML, has something other than a ``[columns]``
            table, names an unknown table, or gives an entry without a reason.
            The message names the file and the problem.
        """
        path = Path(export_dir) / ALLOWLIST_FILE
        if not path.is_file():
            return cls({})
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text; save it as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc}); see docs/phi-guard.md for the format") from None
        return cls(_parse_allowlist(data, str(path)))

    def allows(self, table: str, column: str) -> bool:
        return f"{table}.{column}" in self.columns


def _parse_allowlist(data: Mapping[str, object], where: str) -> dict[str, str]:
    hint = 'expected [columns] with entries like "patients.site" = "why this column is not identifying"'
    extra = sorted(k for k in data if k != "columns")
    if extra:
        raise ValueError(f"{where}: unknown section or key(s) {', '.join(extra)}; {hint}")
    cols = data.get("columns", {})
    if not isinstance(cols, dict):
        raise ValueError(f"{where}: 'columns' must be a table; {hint}")
    out: dict[str, str] = {}
    problems: list[str] = []
    for key, reason in cols.items():
        table, dot, column = key.partition(".")
        if not dot or not table or not column:
            problems.append(f"entry {key!r} is not 'table.column'")
        elif table not in TABLES:
            problems.append(f"entry {key!r} names unknown table {table!r} (tables: {', '.join(TABLES)})")
        elif not isinstance(reason, str):
            problems.append(f"entry {key!r} must be a text reason, not a {type(reason).__name__}")
        elif not reason.strip():
            problems.append(f"entry {key!r} has no reason; say why the column is not identifying and who approved it")
        else:
            out[key] = reason.strip()
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + f"; {hint}")
    return out


# --------------------------------------------------------------------------- column-name rules


def _name_tokens(name: str) -> list[str]:
    """'patientFirstName' / 'Patient First-Name' / 'PATIENT_FIRST_NAME' -> ['patient', 'first', 'name']."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)
    return re.findall(r"[a-z]+|[0-9]+", s.lower())


@dataclass(frozen=True)
class _NameRule:
    rule: str
    what: str
    compact: str  # regex searched in the lower-case name with every separator removed
    tokens: frozenset[str] = frozenset()  # or any of these as a whole word

    def matches(self, tokens: list[str], compact: str) -> bool:
        return bool(re.search(self.compact, compact)) or not self.tokens.isdisjoint(tokens)


#: Words that say a "..._name" column names a thing, not a person.
_THING_WORDS = frozenset("""
    drug drugs medication medications med meds product brand generic compound molecule formulation route
    site sites clinic hospital facility center centre practice unit ward department service program programme
    instrument scale test questionnaire assessment arm study trial protocol sponsor manufacturer
    file filename column field variable table dataset sheet tab event ae diagnosis dx condition disorder
    code category group cohort phase visit lab assay procedure device country region state
""".split())

NAME_RULES: tuple[_NameRule, ...] = (
    _NameRule("column_name.ip_address", "an IP address",
              r"^(?:client|source|src|remote|user|host|login|device|patient)?ipv?[46]?(?:address|addr)?$|ipaddr"),
    _NameRule("column_name.email", "an e-mail address", r"(?<!voic)email|^mail(?:address|addr)?$"),
    _NameRule("column_name.url", "a web address (URL)",
              r"website|webpage|homepage|webaddress|weburl|^url|url$|^uri$", frozenset({"url", "urls", "uri"})),
    _NameRule("column_name.birth_date", "a date of birth",
              r"dateofbirth|birthdate|birthday|birthdt|datebirth|dateborn|borndate|^dob|dob$|^born(?:on)?$|^bday$",
              frozenset({"dob", "bday", "birthday"})),
    _NameRule("column_name.phone", "a phone or fax number",
              r"phone|^tel(?:no|nr|num|number)?$|^(?:mobile|cell|fax|pager)(?:no|nr|num|number|phone)?$"
              r"|faxnumber|faxno|pager|contactnumber|contactno|mobilenumber|mobileno|voicemail",
              frozenset({"tel", "fax", "pager"})),
    _NameRule("column_name.identifier_number", "an identifying number (SSN, medical record, plan, account, "
              "licence, vehicle or device number)",
              r"socialsecurity|medicalrecord|recordnumber|recordno|chartnumber|chartno|healthplan|insuranceid"
              r"|insurancenumber|insuranceno|policynumber|policyno|memberid|membernumber|memberno|beneficiary"
              r"|accountnumber|accountno|acctno|acctnumber|acctnum|licensenumber|licencenumber|licenseno|licenceno"
              r"|driverslicen[cs]e|driverlicen[cs]e|licen[cs]eplate|numberplate|vehicle|deviceserial|serialnumber"
              r"|serialno|deviceid|nhsnumber|nhsno|medicareno|medicarenumber|medicaidno|medicaidnumber|passport"
              r"|nationalid|nationalinsurance|username|^ssn|ssn$|^mrn|mrn$",
              frozenset({"ssn", "mrn", "vin", "plate", "plates", "nhs", "udi", "hicn", "mbi", "medicare", "medicaid"})),
    _NameRule("column_name.zip", "a ZIP or postal code", r"zipcode|postcode|postalcode|^zip|zip$",
              frozenset({"zip", "postal", "postcode"})),
    _NameRule("column_name.address", "an address or place of residence",
              r"address|street|latitude|longitude|geolocation|geocode",
              frozenset({"addr", "street", "city", "town", "county", "suburb", "precinct", "municipality",
                         "residence", "domicile", "gps"})),
    _NameRule("column_name.person_name", "a person's name",
              r"firstname|lastname|givenname|familyname|middlename|surname|fullname|forename|maidenname|nickname"
              r"|patientname|nextofkin|emergencycontact|kinname",
              frozenset({"nok", "surname", "forename", "initials", "kin"})),
    _NameRule("column_name.biometric", "a photo or biometric identifier",
              r"photo|fingerprint|voiceprint|retina|iris(?:scan|image)|faceimage|facial|biometric"),
)


def _column_name_rule(name: str) -> _NameRule | None:
    tokens = _name_tokens(name)
    compact = "".join(tokens)
    for rule in NAME_RULES:
        if rule.matches(tokens, compact):
            return rule
    # a bare "name" / "..._name": a person unless it qualifies a thing (drug_name, site_name, ...)
    if ({"name", "names"} & set(tokens)) and not (_THING_WORDS & set(tokens)):
        return NAME_RULES[-2]
    return None


# --------------------------------------------------------------------------- value patterns

# ASCII classes and ASCII word boundaries throughout: faster (the lazy DFA never
# falls back for Unicode word boundaries) and identifiers are written in ASCII.
_B = r"(?-u:\b)"
_D = "[0-9]"

P_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
P_SSN = rf"{_B}{_D}{{3}}-{_D}{{2}}-{_D}{{4}}{_B}|{_B}{_D}{{3}} {_D}{{2}} {_D}{{4}}{_B}"
P_PHONE = "|".join((
    rf"\({_D}{{3}}\) ?{_D}{{3}}[-. ]{_D}{{4}}{_B}",  # (555) 123-4567
    rf"{_B}{_D}{{3}}[-.]{_D}{{3}}[-.]{_D}{{4}}{_B}",  # 555-123-4567, 555.123.4567, 1-555-123-4567
    rf"{_B}{_D}{{3}} {_D}{{3}} {_D}{{4}}{_B}",  # 555 123 4567
    # +1 555 123 4567, +44 20 7946 0958, +33 1 23 45 67 89, +15551234567 (no '.' separators: +100.25 is a number)
    rf"(?:^|[^0-9A-Za-z+])\+{_D}{{1,3}}[ -]?\(?{_D}{{1,4}}\)?(?:[ -]?{_D}{{2,4}}){{2,4}}{_B}",
))
_OCT = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HEX = "[0-9A-Fa-f]{1,4}"
P_IP = "|".join((
    rf"{_B}(?:{_OCT}\.){{3}}{_OCT}{_B}",  # IPv4
    rf"{_B}(?:{_HEX}:){{7}}{_HEX}{_B}",  # IPv6, full
    rf"{_B}(?:{_HEX}:){{1,6}}:{_HEX}(?::{_HEX}){{0,5}}{_B}",  # IPv6 with '::' (a time 09:00:00 has no '::')
    rf"{_B}(?:{_HEX}:){{2,7}}:",
))
P_URL = r"(?i:(?-u:\b)(?:https?|ftp)://[^\s]+|(?-u:\b)www\.[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,})"

_STREET_TYPES = ("Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way"
                 "|Parkway|Pkwy|Highway|Hwy|Close|Crescent|Square|Sq|Circle|Cir|Gardens|Mews|Row|Walk")
P_STREET = "|".join((
    # 12 Oak Street, 221B Baker St, 1600 Pennsylvania Avenue NW
    rf"{_B}{_D}{{1,5}}[A-Za-z]? +(?:[A-Z][a-z]+\.? +){{1,3}}(?:{_STREET_TYPES}){_B}",
    rf"{_B}{_D}{{1,5}}[A-Z]? +(?:[A-Z]{{2,}} +){{1,3}}(?:{_STREET_TYPES.upper()}){_B}",
    r"(?i:(?-u:\b)p\.? ?o\.? +box +[0-9]+)",  # PO Box 123
))
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
           "|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR")
P_ZIP_WHOLE = rf"^\s*{_D}{{5}}(?:-{_D}{{4}})?\s*$"  # the whole value is a ZIP: share threshold
P_ZIP_STATE = rf"{_B}(?:{_STATES}),? +{_D}{{5}}(?:-{_D}{{4}})?{_B}"  # "Springfield, IL 62704": one row

_CAP = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
# The whole value is 2-3 capitalised words (optionally a middle initial), or "Last, First".
P_NAME_WEAK = rf"^\s*(?:{_CAP}(?: +[A-Z]\.?)?(?: +{_CAP}){{1,2}}|{_CAP}, *{_CAP}(?: +[A-Z]\.?)?)\s*$"

#: Common given names that are not also common English or clinical words (no
#: May, Will, Grace, Hope, Mark, Ward, Iris, Max, Victoria, Jordan, ...). A given
#: name followed by another word, in any case, is a name in one row.
GIVEN_NAMES = frozenset("""
    aaron adam adrian alan albert alex alexander alexandra alice alicia allison amanda amy andrea andrew angela
    anna anne anthony antonio arthur ashley barbara benjamin betty beverly brandon brenda brian bruce bryan
    carl carlos carolyn catherine charles cheryl christina christine christopher cynthia daniel
    danielle david deborah debra denise dennis diana diane donald donna dorothy douglas edward elizabeth
    emily emma eric ethan evelyn frances francis gabriel gary george gerald gloria gregory hannah harold
    harry heather helen henry howard isabella jacob james janet janice jason jeffrey jennifer jeremy jessica
    joan joe john johnny jonathan joseph joshua joyce juan judith judy julia julie justin karen katherine
    kathleen kathryn keith kelly kenneth kevin kimberly kyle laura lauren linda lisa louis
    margaret maria marie marilyn martha mary matthew megan melissa michael michelle nancy natalie nathan
    nicholas nicole noah olivia pamela patricia patrick paul peter philip rachel ralph randy raymond rebecca
    richard robert roger ronald roy russell ryan samantha samuel sandra sara sarah scott sean sharon shirley
    sophia stephanie stephen steven susan teresa theresa thomas timothy vincent walter wayne
    william zachary mohammed muhammad ahmed fatima priya wei ming hiroshi yuki olga ivan dmitri sergei
    giuseppe francesca pierre jean-pierre hans klaus jurgen sven lars ingrid astrid
""".split())

#: Words that make a capitalised phrase a place, an institution, a drug or a clinical
#: term, not a person ("North Clinic", "Ketamine Infusion", "Lithium Carbonate",
#: "Mild Dissociation", ...). Checked on the whole value (weak rule) and on a given
#: name's match with one word either side (strong rule: "St John Ambulance").
STOP_WORDS = frozenset("""
    clinic clinics hospital hospitals center centre centers centres medical medicine health healthcare university
    institute site sites unit units ward wards department dept general memorial regional community practice
    group services service care trust campus office building north south east west central northern southern
    eastern western upper lower main city county valley park hill hills heights lake river bay beach mount mt
    saint st san santa fort port cape street road avenue lane hall house court square foundation partners
    associates network system systems pavilion wing annex outpatient inpatient mental behavioral behavioural
    psychiatry psychiatric psychology neuro wellness recovery treatment research study trial ambulance
    emergency ambulatory private public national state royal children childrens women womens veterans va
    terrace grove view ridge rapids arbor harbor harbour meadow meadows springs spring falls creek woods forest
    glen grand green point crossing village town township shore shores island garden gardens place plaza tower
    towers downtown uptown midtown riverside lakeside lakeview hillside
    ketamine esketamine racemic intranasal nasal oral sublingual intravenous intramuscular infusion injection
    spray tablet tablets capsule capsules solution lozenge troche drops hydrochloride hcl hydrobromide sodium
    potassium lithium magnesium calcium carbonate citrate oxalate mesylate maleate succinate tartrate fumarate
    besylate sulfate sulphate phosphate acetate bromide chloride lactate gluconate valproate divalproex
    extended delayed modified immediate sustained release xr xl er sr cr la ir odt mg dose doses generic brand
    depression depressive disorder bipolar major rating scale questionnaire inventory score test assessment
    clinician nurse physician team adverse event nausea headache dizziness vertigo vomiting sedation anxiety
    dissociation hallucinations hypertension hypotension tachycardia blood pressure heart rate mild moderate
    severe transient resolved elevated increased decreased symptoms baseline visit induction maintenance
    response remission relapse partial good poor prior history improved improvement worse worsening episode
    attack pain chest mouth dry vision blurred signs vital stable room ect tms icu
    placebo bupropion monday tuesday wednesday thursday friday saturday sunday january february march april may june
    july august september october november december
""".split())
#: Words that make a whole value a phrase rather than a name ("Not Done", "Lost To Follow Up").
PHRASE_WORDS = frozenset("""
    and or of the to for with without per plus not no yes none unknown other new old first second third
    week weeks month months day days completed ongoing switched lost follow up done na active control
    standard usual high low total left right self
""".split())
#: Word endings of drug names ("Escitalopram Oxalate", "Quetiapine Fumarate").
DRUG_STEMS = ("oxetine", "pram", "tamine", "azepam", "azolam", "triptyline", "ipramine", "faxine", "azodone",
              "apine", "idone", "piprazole", "trigine", "mazepine", "barbital", "phenidate", "phetamine", "zolpidem",
              "pine", "zine", "xetine")

_GIVEN = "|".join(sorted(GIVEN_NAMES))
P_NAME_GIVEN = (
    rf"(?i:(?-u:\b)(?:{_GIVEN}) +[a-z][a-z'-]+)"  # John Smith, JOHN SMITH, called john about ...
    rf"|(?i:(?-u:\b)[a-z][a-z'-]+, *(?:{_GIVEN})(?-u:\b))"  # SMITH, JOHN
)
P_NAME_TITLE = r"(?-u:\b)(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? +[A-Z][a-z][A-Za-z'-]*"  # Mrs Jones, Dr. Smith
P_NAME_STRONG = f"{P_NAME_GIVEN}|{P_NAME_TITLE}"
# For extraction: one word before and after too ("St John Ambulance", "Mary Washington Hospital").
_P_NAME_STRONG_CTX = r"(?:(?-u:\b)[A-Za-z]+ +)?(?:" + P_NAME_STRONG + r")(?: +[A-Za-z]+)?"
_P_STOP = (r"(?i:(?-u:\b)(?:" + "|".join(sorted(STOP_WORDS)) + r")(?-u:\b)"
           r"|[a-z]+(?:" + "|".join(DRUG_STEMS) + r")(?-u:\b))")
_P_PHRASE = r"(?i:(?-u:\b)(?:" + "|".join(sorted(PHRASE_WORDS)) + r")(?-u:\b))"

_MON = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_Y = r"(?:19|20)[0-9]{2}"
_MM = r"(?:0?[1-9]|1[0-2])"
_DD = r"(?:0?[1-9]|[12][0-9]|3[01])"
# A full date (day precision): ISO, US/European numeric, 12 Mar 1984, March 12, 1984.
P_DATE = (rf"(?i:(?-u:\b)(?:{_Y}[-/.]{_MM}[-/.]{_DD}|{_DD}[-/.]{_MM}[-/.]{_Y}|{_MM}[-/.]{_DD}[-/.]{_Y}"
          rf"|{_DD}[ -]{_MON}[ ,-]+{_Y}|{_MON} +{_DD},? +{_Y})(?-u:\b))")
P_YEAR = r"(?-u:\b)((?:19|20)[0-9]{2})(?-u:\b)"


@dataclass(frozen=True)
class _ValueRule:
    rule: str
    what: str  # "e-mail addresses"
    pattern: str


HIGH_RULES: tuple[_ValueRule, ...] = (
    _ValueRule("value.email", "e-mail addresses", P_EMAIL),
    _ValueRule("value.ssn", "social security numbers (NNN-NN-NNNN)", P_SSN),
    _ValueRule("value.phone", "phone or fax numbers", P_PHONE),
    _ValueRule("value.ip_address", "IP addresses", P_IP),
    _ValueRule("value.url", "web addresses (URLs)", P_URL),
)
STREET_RULE = _ValueRule("value.street_address", "street addresses", P_STREET)


# --------------------------------------------------------------------------- column kinds


@dataclass(frozen=True)
class _Kind:
    """What a column gets scanned for."""

    contract_dtype: str | None  # None: not in the contract (an extra column)
    is_id: bool  # contract key / reference column: pseudonymous ids (no ZIP rule)
    birthish: bool  # its name suggests birth
    codeish: bool = False  # its name says it holds 5-digit codes that are not ZIPs (CPT, HCPCS, ...)
    per_patient: bool = False  # a column of the patients table (one row per patient, no contract dates)

    @property
    def numeric(self) -> bool:
        return self.contract_dtype in ("INTEGER", "DOUBLE")

    @property
    def text_rules(self) -> bool:  # names, addresses, ZIPs
        return not self.numeric

    @property
    def zip_rule(self) -> bool:
        return self.text_rules and not self.is_id and not self.codeish

    @property
    def date_rule(self) -> bool:  # contract DATE/TIMESTAMP columns hold shifted dates: allowed
        return self.birthish or self.contract_dtype is None


#: Column-name words that say a column of 5-digit numbers holds billing or
#: terminology codes (a CPT code such as 90870 is not a ZIP).
_CODE_WORDS = frozenset({"cpt", "hcpcs", "icd", "ndc", "loinc", "snomed", "drg", "procedure", "billing"})


def _kind(table: str, column: str) -> _Kind:
    spec = TABLES[table]
    tokens = _name_tokens(column)
    compact = "".join(tokens)
    birthish = bool(re.search(r"birth|born|^dob|dob$", compact)) or bool({"dob", "bday"} & set(tokens))
    codeish = bool(_CODE_WORDS & set(tokens))
    if column in spec.column_names:
        ids = set(spec.key) | {r.column for r in spec.references}
        return _Kind(spec.column(column).dtype, column in ids or column.endswith("_id"), birthish, codeish,
                     table == "patients")
    return _Kind(None, False, birthish, codeish, table == "patients")


@lru_cache(maxsize=None)
def _union(kind: _Kind) -> str:
    """One regex that matches every row any rule of this kind of column could flag."""
    parts = [r.pattern for r in HIGH_RULES]
    if kind.text_rules:
        parts += [P_STREET, P_ZIP_STATE, P_NAME_WEAK, P_NAME_STRONG]
    if kind.zip_rule:
        parts.append(P_ZIP_WHOLE)
    if kind.date_rule:
        parts.append(P_DATE)
    return "|".join(f"(?:{p})" for p in parts)


# --------------------------------------------------------------------------- scanning


def _display(columns: list[str], positions: Mapping[str, int]) -> dict[str, tuple[str, str | None]]:
    """How each column may be named in a message: its name, or '#N' when the header looks like PHI itself
    (a data row pasted over the header), with what it looks like."""
    names = pl.Series("c", columns, dtype=pl.String)
    looks: list[str | None] = [None] * len(columns)
    checks = [(r.pattern, r.what) for r in (*HIGH_RULES, STREET_RULE)] + [
        (P_ZIP_STATE, "an address"), (P_NAME_GIVEN, "a person's name")]
    for pattern, what in checks:
        hit = names.str.contains(pattern)
        if pattern == P_NAME_GIVEN:
            hit = hit & ~names.str.contains(_P_STOP)
        for i, h in enumerate(hit.to_list()):
            if h and looks[i] is None:
                looks[i] = what
    return {c: ((f"#{positions[c]}", w) if w else (c, None)) for c, w in zip(columns, looks)}


def _advice(kind: _Kind) -> str:
    allow = "declare it safe in phi_allowlist.toml with the reason"
    if kind.contract_dtype is None:
        return f"remove the column from the export or, if it is not identifying, {allow}"
    if kind.numeric:
        return ("fix those cells in the export: a number column holds numbers only (the file is refused, "
                "not quarantined, so the values never reach the warehouse or a log)")
    return f"replace those values with de-identified codes in the export or, if they are not identifying, {allow}"


def scan_frame(frame: pl.DataFrame, *, table: str, file: str, allow: PhiAllowList) -> list[PhiFinding]:
    """Findings for one file as read: every column as text plus ``_row_number`` (ignored).

    Parameters
    ----------
    frame : DataFrame
        All columns of the file, contract and extra, as ``pl.String`` (others are
        cast to text).
    table : str
        The contract table the file holds (decides which columns are contract
        columns, their types and ids).
    file : str
        The path as given, for the findings.
    allow : PhiAllowList
        Columns declared safe: skipped by every rule.

    Returns
    -------
    list of PhiFinding
        Empty when the file looks clean. At most one finding per column and rule.
    """
    spec = TABLES[table]
    findings: list[PhiFinding] = []

    def add(column: str, rule: str, reason: str, rows: int) -> None:
        findings.append(PhiFinding(file=file, table=table, column=column, rule=rule, reason=reason, rows=rows))

    columns = [c for c in frame.columns if c != ROW_NUMBER and not allow.allows(table, c)]
    positions = {c: i + 1 for i, c in enumerate(c for c in frame.columns if c != ROW_NUMBER)}
    shown = _display(columns, positions)
    kinds = {c: _kind(table, c) for c in columns}

    # 1. Column names (extra columns only: the contract is de-identified by design).
    for c in columns:
        label, header_looks_like = shown[c]
        if header_looks_like is not None:
            add(label, "column_name.looks_like_identifier",
                f"the header of column {label} looks like {header_looks_like} itself (not shown); "
                "fix the header row of the export", 0)
            continue
        if c in spec.column_names:
            continue
        rule = _column_name_rule(c)
        if rule is not None:
            add(label, rule.rule,
                f"column '{label}' is named like {rule.what}, a direct identifier under HIPAA Safe Harbor; "
                f"remove it from the export or, if it holds no identifiers, declare it safe in "
                f"{ALLOWLIST_FILE} with the reason", frame.height - frame[c].null_count())

    # 2. Values: one union-regex pass per column over all rows (in parallel), ...
    texts = {c: (pl.col(c) if frame.schema[c] == pl.String else pl.col(c).cast(pl.String)) for c in columns}
    if not columns or frame.height == 0:
        return findings
    hits = frame.select(
        [texts[c].str.contains(_union(kinds[c])).fill_null(False).alias(c) for c in columns]
    )
    counts = hits.sum().row(0, named=True)
    for c in columns:
        if not counts[c]:
            continue
        # ... then every rule on the distinct values of the few rows that could match.
        counted = _counted(frame.select(texts[c].alias("v")).filter(hits[c]))
        n = frame.height - frame[c].null_count()
        findings += [
            PhiFinding(file=file, table=table, column=shown[c][0], rule=rule, rows=rows,
                       reason=f"column '{shown[c][0]}' has values that look like {what} in {rows} of {n} rows"
                              f"{extra}; {_advice(kinds[c])}")
            for rule, what, rows, extra in _value_findings(counted, kinds[c], frame[c])
        ]
    return findings


def _counted(rows: pl.DataFrame) -> pl.DataFrame:
    """Candidate values ``v`` with their row counts ``n``: grouped when they repeat (free text and
    categories repeat a few values), row by row when they are mostly distinct (grouping would cost
    more than it saves)."""
    if rows.height > 50_000:
        sample = rows.gather_every(max(1, rows.height // 20_000))
        if sample["v"].n_unique() < 0.5 * sample.height:
            return rows.group_by("v").agg(pl.len().cast(pl.Int64).alias("n"))
    return rows.with_columns(pl.lit(1, dtype=pl.Int64).alias("n"))


def _value_findings(counted: pl.DataFrame, kind: _Kind, full: pl.Series) -> list[tuple[str, str, int, str]]:
    """(rule, what, rows, extra reason text) for one column.

    ``counted``: the candidate values ``v`` with their row counts ``n`` (see
    :func:`_counted`: repeated values are checked once);
    ``full``: the whole column, for the share denominators.
    """
    v = pl.col("v")
    masks = {r.rule: v.str.contains(r.pattern) for r in HIGH_RULES}
    if kind.text_rules:
        masks[STREET_RULE.rule] = v.str.contains(P_STREET)
        masks["zip_state"] = v.str.contains(P_ZIP_STATE)
        masks["name_weak"] = v.str.contains(P_NAME_WEAK) & ~v.str.contains(_P_STOP) & ~v.str.contains(_P_PHRASE)
        masks["name_strong_shape"] = v.str.contains(P_NAME_STRONG)
    if kind.zip_rule:
        masks["zip_whole"] = v.str.contains(P_ZIP_WHOLE)
    if kind.date_rule:
        masks["dates"] = v.str.contains(P_DATE)
    m = counted.with_columns(**{k: e.fill_null(False) for k, e in masks.items()})

    def rows_where(mask: pl.Series | str) -> int:
        mask = m[mask] if isinstance(mask, str) else mask
        return int(m["n"].filter(mask).sum())

    got = {k: rows_where(k) for k in masks}
    out: list[tuple[str, str, int, str]] = []
    for r in (*HIGH_RULES, STREET_RULE) if kind.text_rules else HIGH_RULES:
        if got[r.rule]:
            out.append((r.rule, r.what, got[r.rule], ""))

    nonempty: int | None = None

    def share(rows: int) -> float:
        nonlocal nonempty
        if nonempty is None:  # one more pass, only when a low-specificity shape matched
            nonempty = int(full.cast(pl.String).str.contains(r"\S").sum())
        return rows / nonempty if nonempty else 0.0

    def limit(rule: str) -> str:
        return f" (more than the limit of {SHARE_THRESHOLDS[rule]:.0%} of non-empty rows)"

    if kind.text_rules and (got["name_strong_shape"] or got["name_weak"]):
        # strong: a given name (or a title) next to another word, unless a stop word is within one word of it
        strong = pl.Series("s", [False] * m.height, dtype=pl.Boolean)
        if got["name_strong_shape"]:
            strong = m.select(
                pl.when(pl.col("name_strong_shape"))
                .then(v.str.extract_all(_P_NAME_STRONG_CTX).list.eval(~pl.element().str.contains(_P_STOP)).list.any())
                .otherwise(False).fill_null(False).alias("s")
            )["s"]
        # weak: "Firstname Lastname"-shaped values, many different ones (a category such as a site or
        # a drug repeats a few values; a column of names has many)
        weak_rows = got["name_weak"]
        distinct = m.filter(pl.col("name_weak"))["v"].n_unique()
        weak_ok = (weak_rows > 0 and share(weak_rows) >= SHARE_THRESHOLDS["value.person_name"]
                   and (distinct >= NAME_MIN_DISTINCT or distinct >= NAME_MIN_DISTINCT_SHARE * weak_rows))
        if strong.any():
            out.append(("value.person_name", "person names (a common given name, or a title such as Mrs or Dr, "
                        "next to another word)", rows_where(strong | (m["name_weak"] & weak_ok)), ""))
        elif weak_ok:
            out.append(("value.person_name", "person names ('Firstname Lastname': two or three capitalised "
                        "words, many different ones)", weak_rows, limit("value.person_name")))

    if kind.text_rules and got["zip_state"]:
        out.append(("value.zip5", "ZIP codes after a state (ST NNNNN)", got["zip_state"], ""))
    elif kind.zip_rule and got["zip_whole"] and share(got["zip_whole"]) >= SHARE_THRESHOLDS["value.zip5"]:
        out.append(("value.zip5", "5-digit ZIP or ZIP+4 codes", got["zip_whole"], limit("value.zip5")))

    if kind.date_rule and got["dates"]:
        if kind.birthish:
            out.append(("value.birth_date", "exact dates of birth (day precision; a year alone is allowed)",
                        got["dates"], ""))
        elif share(got["dates"]) >= SHARE_THRESHOLDS["value.birth_date"]:
            years = (
                m.filter(pl.col("dates"))
                .select(y=v.str.extract(P_DATE, 0).str.extract(P_YEAR, 1).cast(pl.Int32, strict=False), n="n")
                .drop_nulls().group_by("y").agg(pl.col("n").sum()).sort("y")
            )
            spread = _weighted_quantile(years, 0.9) - _weighted_quantile(years, 0.1)
            if kind.per_patient:
                out.append(("value.birth_date", "exact dates of birth (a full date per patient in a column the "
                            "contract does not define is most likely a date of birth)", got["dates"],
                            limit("value.birth_date")))
            elif spread >= BIRTH_YEAR_SPREAD:
                out.append(("value.birth_date", "exact dates of birth", got["dates"],
                            f" (full dates spread over {spread} years, as a cohort's birth dates are; "
                            f"event dates span a few)"))
    return out


def _weighted_quantile(counts: pl.DataFrame, q: float) -> int:
    """The q-quantile (lower) of ``y`` weighted by ``n``; ``counts`` sorted by ``y``."""
    if counts.height == 0:
        return 0
    cum = counts["n"].cum_sum()
    target = q * float(cum[-1])
    return int(counts["y"].filter(cum >= target)[0])


def check_frame(frame: pl.DataFrame, *, table: str, file: str, allow: PhiAllowList) -> None:
    """:func:`scan_frame`, raising :class:`PhiError` when there is any finding."""
    findings = scan_frame(frame, table=table, file=file, allow=allow)
    if findings:
        raise PhiError(findings)


# --------------------------------------------------------------------------- ages


#: Ages above this are not real ages but typos; they are left for the range checks.
AGE_MAX_REAL = 120


def cap_age(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Safe Harbor ages: ``age_at_index`` values from 90 to 120 become ``"90"``.

    Text in, text out: a value that is not a number is left as it is for the
    type check. A frame without the column is returned unchanged.

    Returns
    -------
    (DataFrame, int)
        The frame and how many values were changed.
    """
    if AGE_COLUMN not in frame.columns:
        return frame, 0
    text = pl.col(AGE_COLUMN).cast(pl.String)
    number = text.str.strip_chars().cast(pl.Float64, strict=False)
    # Only real ages are aggregated: a typo like 450 stays as it is, so the range
    # checks flag it instead of it turning silently into a plausible 90.
    # Whole numbers only: "95.5" is left for the type check, as "45.5" is.
    over = (number > AGE_CAP) & (number <= AGE_MAX_REAL) & (number == number.floor()) & (text != "90")
    changed = int(frame.select(over.fill_null(False).sum()).item())
    if not changed:
        return frame, 0
    return frame.with_columns(pl.when(over).then(pl.lit("90")).otherwise(text).alias(AGE_COLUMN)), changed
