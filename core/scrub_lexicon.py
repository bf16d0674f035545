"""The words people put before a secret, in fourteen languages: the lexicon `core.scrub_labels` reads.

A phrase matches whatever separator people put between its words ("pin code", "pin-code", "PIN  code");
write a phrase glued too ("pincode") when people glue it. Kinds say what may follow:

- PASSWORD: names a secret by itself ("password", "пароль", "Passwort", "密码"). Any connector, also none
  ("пароль qwerty123"); after none the value must look like a secret, not a word.
- WEAK: an ordinary word too ("pass", "pw", "key", "token"): after ":", "=", "->" or "is" a value that is not
  a plain word, after nothing 6+ digits or letters mixed with digits ("I'll pass — thanks", "secret: i've
  never seen it", "pass 10am" stay).
- CODE: a short numeric secret ("sms code", "PIN", "CVV", "door code", "код домофона", "認証コード"): any
  connector, and the value is 3-8 digits.
- BARE_CODE: "code" alone ("код", "Code", "kod", "código"): a connector is needed ("code: 4821", "the code
  is 4821"), so "code review 2" and "код товара 12345" stay.
- ID: a national id or passport ("SSN", "СНИЛС", "passport", "pasaporte"): any connector, an id-shaped value.
- WIFI: a network, only as a "network / password" pair ("wifi: HomeNet / qwerty123").
"""

from __future__ import annotations

PASSWORD, WEAK, CODE, BARE_CODE, ID, WIFI = "password", "weak", "code", "bare_code", "id", "wifi"


def words(listing: str) -> tuple[str, ...]:
    """ "a, b c, d" → ("a", "b c", "d"): the lexicon is written as comma-separated phrases."""
    return tuple(w.strip() for w in listing.split(",") if w.strip())


LEXICON: dict[str, dict[str, str]] = {
    "en": {
        PASSWORD: (
            "password, passwd, passphrase, passcode, pwd, api key, access token, auth token, secret key, private key, "
            "app password"
        ),
        WEAK: "pass, pw, secret, token, key",
        CODE: (
            "pin, pin code, pincode, sms code, text code, verification code, confirmation code, security code, "
            "one-time code, one time code, login code, 2fa code, auth code, otp, cvv, cvc, cvv2, cvc2, door code, "
            "gate code, intercom code, entry code, buzzer code, alarm code, lock code, safe code, safe combination, "
            "lock combination, combination"
        ),
        BARE_CODE: "code",
        ID: "ssn, social security number, social security, passport",
        WIFI: "wifi, wi-fi, wlan, ssid, network",
    },
    "ru": {
        PASSWORD: "пароль, пароля, паролем, паролю, пассворд",
        WEAK: "пасс, токен, секрет, ключ",
        CODE: (
            "пин, пин-код, пинкод, код из смс, код из sms, смс-код, смс код, sms-код, код подтверждения, код доступа, "
            "одноразовый код, код домофона, код от домофона, код двери, код от двери, код подъезда, код от подъезда, "
            "код сейфа, код от сейфа, код сигнализации, код от сигнализации, код калитки, код от калитки, cvv-код, "
            "свв"
        ),
        BARE_CODE: "код",
        ID: "снилс, инн, паспорт, паспорта, серия и номер паспорта, номер паспорта, загранпаспорт",
        WIFI: "вайфай, вай-фай, сеть, wifi-сеть",
    },
    "uk": {
        PASSWORD: "пароль, пароля",
        CODE: "пін, пін-код, код з смс, код підтвердження, код домофона, код від домофона",
        ID: "паспорт, рнокпп, іпн",
        WIFI: "мережа",
    },
    "zh": {
        PASSWORD: "密码, 密碼, 口令, 支付密码, 登录密码",
        CODE: "验证码, 驗證碼, 校验码, 动态码, 短信验证码, 门禁密码, 门禁码, 安全码",
        ID: "身份证, 身份证号, 身份证号码, 护照, 护照号, 护照号码",
        WIFI: "无线, 网络, wifi名",
    },
    "de": {
        PASSWORD: "passwort, kennwort, zugangsdaten, geheimzahl",
        CODE: (
            "bestätigungscode, sms-code, verifizierungscode, einmalcode, sicherheitscode, türcode, zugangscode, "
            "pin-code, pin-nummer, prüfziffer"
        ),
        BARE_CODE: "code",
        ID: "reisepass, reisepassnummer, ausweisnummer, personalausweis, steuer-id, sozialversicherungsnummer",
        WIFI: "wlan, netzwerk",
    },
    "fr": {
        PASSWORD: "mot de passe, mdp",
        CODE: (
            "code de vérification, code de confirmation, code sms, code de sécurité, digicode, code de la porte, code "
            "d'accès, code pin, cryptogramme, code secret"
        ),
        BARE_CODE: "code",
        ID: "passeport, numéro de sécurité sociale, numéro de passeport",
        WIFI: "réseau",
    },
    "es": {
        PASSWORD: "contraseña, contrasena, clave de acceso",
        WEAK: "clave",
        CODE: (
            "código de verificación, código de confirmación, código sms, código de seguridad, código de acceso, "
            "código de la puerta, código del portal, código pin, pin"
        ),
        BARE_CODE: "código, codigo",
        ID: "pasaporte, dni, nie, número de pasaporte",
        WIFI: "red",
    },
    "pt": {
        PASSWORD: "senha, palavra-passe",
        CODE: (
            "código de verificação, código de confirmação, código sms, código de segurança, código de acesso, código "
            "do portão, código pin"
        ),
        BARE_CODE: "código",
        ID: "passaporte, cpf, número do passaporte",
        WIFI: "rede",
    },
    "it": {
        PASSWORD: "password, parola d'ordine",
        CODE: (
            "codice di verifica, codice sms, codice di sicurezza, codice del portone, codice pin, codice d'accesso, "
            "codice di accesso"
        ),
        BARE_CODE: "codice",
        ID: "passaporto, codice fiscale",
        WIFI: "rete",
    },
    "nl": {
        PASSWORD: "wachtwoord",
        CODE: "verificatiecode, sms-code, beveiligingscode, toegangscode, deurcode, pincode",
        ID: "paspoort, bsn, paspoortnummer",
        WIFI: "netwerk",
    },
    "pl": {
        PASSWORD: "hasło, hasła, hasłem, haslo",
        CODE: (
            "kod weryfikacyjny, kod sms, kod z sms, kod z smsa, kod do drzwi, kod domofonu, kod do domofonu, kod do "
            "bramy, kod pin, kod dostępu, kod bezpieczeństwa"
        ),
        BARE_CODE: "kod",
        ID: "paszport, pesel, numer paszportu, dowód osobisty",
        WIFI: "sieć",
    },
    "tr": {
        PASSWORD: "şifre, şifrem, şifresi, şifreniz, parola, parolam, parolası",
        CODE: "doğrulama kodu, sms kodu, onay kodu, güvenlik kodu, kapı şifresi, kapı kodu, pin kodu",
        BARE_CODE: "kod, kodu",
        ID: "pasaport, tc kimlik, kimlik no, tc no",
        WIFI: "ağ",
    },
    "ja": {
        PASSWORD: "パスワード, 暗証番号",
        WEAK: "パス",
        CODE: "認証コード, 確認コード, ワンタイムパスワード, セキュリティコード, 認証番号, ドアの暗証番号",
        BARE_CODE: "コード",
        ID: "パスポート, 旅券番号, マイナンバー",
        WIFI: "ネットワーク",
    },
    "ko": {
        PASSWORD: "비밀번호, 비번, 암호, 패스워드",
        CODE: "인증번호, 인증 번호, 인증코드, 인증 코드, 보안코드, 현관 비밀번호, 도어락 비밀번호, 핀번호",
        BARE_CODE: "코드",
        ID: "여권, 여권번호, 주민등록번호, 주민번호",
        WIFI: "와이파이, 네트워크",
    },
}

# The login half of a "login/password" pair: both values go ("login/pass: me/abc1", "账号/密码").
LOGIN_WORDS = words(
    "login, user, username, e-mail, email, mail, логин, юзер, почта, 账号, 用户名, 邮箱, benutzer, benutzername, "
    "identifiant, usuario, usuário, utente, gebruiker, gebruikersnaam, użytkownik, kullanıcı, ユーザー, 아이디"
)

# What a password is "for", between the label and the value ("пароль от вайфая: …", "password for the router
# is …", "mot de passe du wifi : …"): a preposition and up to three words.
WHOSE_WORDS = words(
    "от, для, к, из, від, до, for, to, of, on, at, für, von, vom, zum, zur, de, du, des, pour, del, para, do, da, "
    "di, della, per, van, voor, od, na, z"
)

# Words that join a label to its value in a sentence ("the password is …", "das Passwort ist …", "hasło to …").
# English ones also take a plain word ("my password is fluffy"); the others need a value shaped like a secret.
SAID_ENGLISH = ("is", "was", "will be", "is now", "should be")
SAID_OTHER = words("это, будет, є, ist, lautet, est, c'est, es, era, é, eh, è, luidt, to, jest, brzmi, olarak")
SAID_ATTACHED = ("是", "为", "為", "は", "が", "는", "은", "이", "가")  # particles written without a space

# Words that say something about a password rather than being one ("the password is wrong").
NOT_A_PASSWORD = frozenset(
    "wrong incorrect correct right invalid valid weak strong too not no the a an same different expired changed "
    "reset required needed empty ok okay fine case long short saved set still also just only really very what "
    "which that this there here in on at for from your my his her their our its now being been sent stored hashed "
    "encrypted secure safe easy hard simple below above attached written visible hidden missing unknown useless "
    "public private new old and or but because so if when again is was protected manager change changed changing "
    "working broken forgotten updated lost stolen complicated obvious".split()
)

# "code" after these words is not a secret ("zip code: 90210", "error code: 404").
NOT_A_SECRET_CODE = frozenset(
    "zip area postal post country error status exit return promo promotional discount coupon source dress morse "
    "qr bar color colour html region airport product item iata sort swift bic reference tracking".split()
)

# Words for the number of a document, between an id label and its value ("passport no. …", "паспорт №").
NUMBER_WORDS = words(
    "number, no, no., nr, nr., num, #, №, n°, nº, номер, серия и номер, серия, nummer, numéro, número, numer, "
    "numero, numarası, 番号, 번호, 号码, 号"
)


def kind_of() -> dict[str, str]:
    """Every phrase of the lexicon, as `key` spells it, → its kind (a phrase listed twice keeps its first)."""
    kinds: dict[str, str] = {}
    for by_kind in LEXICON.values():
        for kind, phrases in by_kind.items():
            for phrase in words(phrases):
                kinds.setdefault(key(phrase), kind)
    return kinds


def key(phrase: str) -> str:
    """A phrase as written, without case, spaces and dashes: "PIN-code", "pin code" and "pincode" are one."""
    return "".join(phrase.lower().replace("-", " ").split())
